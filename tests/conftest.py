"""Shared pytest fixtures.

Real footage lives in ../shared/fixtures next to the repository (test-only material, never copied into
the repo). Tests that need it take the `fixtures_dir` fixture and are skipped with a reason when it is
absent, as on a user's machine. RELIGHT_FIXTURES overrides the location.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _find_fixtures() -> Path | None:
    env = os.environ.get("RELIGHT_FIXTURES")
    shared = [REPO.parent / "shared" / "fixtures", REPO.parent.parent / "shared" / "fixtures"]
    candidates = [Path(env)] if env else shared
    for c in candidates:
        if (c / "PROVENANCE.md").is_file():
            return c
    return None


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The ../shared/fixtures folder; skips the test when it is absent."""
    found = _find_fixtures()
    if found is None:
        pytest.skip("../shared/fixtures is absent (real footage is test-only material)")
    return found


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """skimage's astronaut portrait as (512, 512, 3) uint8 sRGB (ships with scikit-image)."""
    from skimage import data

    return data.astronaut()
