"""glasspool._version: the version is written once, in pyproject.toml."""

from __future__ import annotations

import importlib.metadata

import glasspool
from glasspool._headers import USER_AGENT


def test_version_is_the_installed_distributions() -> None:
    assert glasspool.__version__ == importlib.metadata.version("glasspool")


def test_the_default_user_agent_carries_it() -> None:
    assert f"glasspool/{glasspool.__version__}" == USER_AGENT
