"""docs/auth.md: every ``python`` block runs as a script against httpbin under gunicorn
(``HTTPBIN`` set to it), and prints what the page says it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.httpbinproc import run_httpbin

DOC = Path(__file__).resolve().parent.parent / "docs" / "auth.md"
BLOCK = re.compile(r"```python\n(.*?)```\n\nprints\n\n```text\n(.*?)```", re.S)
EXAMPLES = 4


@pytest.fixture(scope="module")
def httpbin_url() -> Iterator[str]:
    yield from run_httpbin()


def test_the_page_has_its_examples() -> None:
    assert len(BLOCK.findall(DOC.read_text(encoding="utf-8"))) == EXAMPLES


@pytest.mark.parametrize("index", range(EXAMPLES))
def test_example_prints_what_the_page_says(index: int, httpbin_url: str, tmp_path: Path) -> None:
    code, expected = BLOCK.findall(DOC.read_text(encoding="utf-8"))[index]
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "HTTPBIN": httpbin_url, "NETRC": str(tmp_path / "none")}
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected.splitlines(), result.stdout
