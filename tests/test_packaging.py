"""The package builds clean: a wheel and an sdist with complete metadata that twine accepts.

Builds with the installed setuptools (``--no-isolation``: no download), into a temporary
directory, and looks inside both archives.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def test_wheel_holds_the_package_and_nothing_else(dist: Path) -> None:
    [wheel] = dist.glob("glasspool-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {
        "glasspool",
        wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info",
    }
    assert "glasspool/py.typed" in names
    assert "glasspool/cli/__init__.py" in names
    assert not any("tests/" in n or ".venv" in n or "__pycache__" in n for n in names)
    meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
    meta = Parser().parsestr(zipfile.ZipFile(wheel).read(meta_name).decode())
    assert meta["Name"] == "glasspool"
    assert meta["License-Expression"] == "MIT"
    assert meta["Requires-Python"] == ">=3.11"
    classifiers = meta.get_all("Classifier") or []
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_sdist_holds_license_readme_changelog_and_tests(dist: Path) -> None:
    [sdist] = dist.glob("glasspool-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    for needed in (
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "pyproject.toml",
        "src/glasspool/py.typed",
    ):
        assert needed in names, needed
    assert not any(n.startswith(".venv") or "__pycache__" in n for n in names)


def test_twine_check_passes(dist: Path) -> None:
    files = sorted(str(p) for p in dist.iterdir())
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
