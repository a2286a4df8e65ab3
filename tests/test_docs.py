"""The user docs: examples are plain code that runs, and the words are for users.

- No ``>>>`` prompts anywhere in README.md or docs/: every example can be pasted into a file.
- Pages whose code blocks form one script (``SCRIPT_PAGES``) are run as that script, in a
  subprocess, and what it prints is compared with the page's "It prints" blocks (``...``
  in an expected line matches anything, such as a port or an object id). On the other
  pages, every code block followed by an "It prints" block is run alone the same way.
- No words about how the project is built ("seed", "issue 12", "this session").
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
SCRIPT_PAGES = ("quickstart.md",)
PRINTING_BLOCK = re.compile(
    r"```python\n((?:(?!```).)*?)```\n\nIt prints:\n\n```text\n(.*?)```", re.S
)
BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.S)
DEVELOPMENT_WORDS = re.compile(
    r"\bseed\b|\bissue\s+#?\d+|\(issue\b|\bthe issue\b|\b(?:this|last|next) session\b"
    r"|\bat the start of this work\b|\bbefore the last change\b|\bcommit messages give\b",
    re.IGNORECASE,
)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_interpreter_prompts(page: Path) -> None:
    for lang, body in BLOCK.findall(page.read_text()):
        assert ">>> " not in body, f"{page.name}: a {lang or 'plain'} block has a >>> prompt"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_development_words(page: Path) -> None:
    found = [
        f"line {n}: {line.strip()}"
        for n, line in enumerate(page.read_text().splitlines(), 1)
        if DEVELOPMENT_WORDS.search(line)
    ]
    assert not found, f"{page.name} speaks about development:\n" + "\n".join(found)


def _expected_lines(text: str) -> list[re.Pattern[str]]:
    """The lines of every "It prints" block, in order, as patterns ("..." = anything)."""
    lines: list[re.Pattern[str]] = []
    for match in re.finditer(r"It prints:\n\n```text\n(.*?)```", text, re.S):
        for line in match.group(1).splitlines():
            if line.strip():
                parts = [re.escape(p) for p in line.strip().split("...")]
                lines.append(re.compile(".*".join(parts)))
    return lines


def _run_and_compare(name: str, code: str, expected_text: str, script: Path) -> None:
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # quiet: no warnings, no tracebacks
    printed = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    expected = _expected_lines(expected_text)
    assert expected, f"{name} has no 'It prints' blocks"
    at = 0
    for pattern in expected:
        while at < len(printed) and not pattern.fullmatch(printed[at]):
            at += 1
        assert at < len(printed), f"{name}: no printed line matches {pattern.pattern!r}"
        at += 1


@pytest.mark.parametrize("name", SCRIPT_PAGES)
def test_script_pages_run_and_print_what_they_say(name: str, tmp_path: Path) -> None:
    text = (ROOT / "docs" / name).read_text()
    code = "\n\n".join(body for lang, body in BLOCK.findall(text) if lang == "python")
    _run_and_compare(name, code, text, tmp_path / "page.py")


PRINTING = [
    pytest.param(page, n, code, f"It prints:\n\n```text\n{out}```", id=f"{page.name}-{n}")
    for page in PAGES
    if page.name not in SCRIPT_PAGES
    for n, (code, out) in enumerate(PRINTING_BLOCK.findall(page.read_text()), 1)
]


@pytest.mark.parametrize(("page", "n", "code", "expected"), PRINTING)
def test_blocks_that_print_run_alone(
    page: Path, n: int, code: str, expected: str, tmp_path: Path
) -> None:
    _run_and_compare(f"{page.name} block {n}", code, expected, tmp_path / "block.py")
