"""The Cycles ground-truth relighting benchmark end to end (slow: two Cycles renders and one relight)."""

from __future__ import annotations

import importlib.util

import pytest

from relight_core.eval import groundtruth


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="the benchmark renders with bpy")
def test_relit_render_is_closer_to_cycles_than_the_input(tmp_path):
    """soft-front -> rembrandt on the astronaut's textured face: the engine's relight must come much closer
    to Cycles' rembrandt render than the input does, and put the light on the same side."""
    res = groundtruth.run(tmp_path, "soft-front", "rembrandt", size=256, samples=8)
    assert res["face_pixels"] > 3000
    assert res["psnr_db"] > res["psnr_input_as_is_db"] + 5.0
    assert res["lit_side_error_deg"] < 30.0
