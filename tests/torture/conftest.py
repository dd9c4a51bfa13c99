"""The ``torture`` marker: ``pytest -m torture`` selects the crash torture alone."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "torture: crash torture with SIGKILLed worker processes")
