"""Fixtures shared by all tests."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real data for tests and benchmarks, beside the repository (never copied into it).
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def shared_data_path() -> Path:
    """``../shared/data`` beside the repository root (may not exist)."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder; skips the test cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} (../shared/data beside the repository) is absent")
    return SHARED_DATA
