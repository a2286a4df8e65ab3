"""docs/observability.md: every ``python`` block runs as a script (as a reader would paste
it into a file), and prints what the page says it prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "observability.md"
BLOCK = re.compile(r"```python\n(.*?)```\n(.*?)(?=```python|\Z)", re.S)
PRINTS_BLOCK = re.compile(r"\A\s*prints[^\n`]*?\n\n```text\n(.*?)```", re.S)
PRINTS_INLINE = re.compile(r"\A\s*prints `([^`]+)`")


def examples() -> list[tuple[str, list[str]]]:
    """Each python block with the lines the text after it says it prints."""
    found = []
    for code, after in BLOCK.findall(DOC.read_text(encoding="utf-8")):
        if block := PRINTS_BLOCK.match(after):
            expected = block.group(1).splitlines()
        elif inline := PRINTS_INLINE.match(after):
            expected = [inline.group(1)]
        else:
            expected = []
        found.append((code, expected))
    return found


def test_the_page_has_its_examples() -> None:
    assert len(examples()) == 4
    assert all(expected for _, expected in examples())


@pytest.mark.parametrize("index", range(4))
def test_example_runs_and_prints_what_the_page_says(index: int, tmp_path: Path) -> None:
    code, expected = examples()[index]
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == sorted(expected), result.stdout
