"""Tracking memory does not grow with the clip's length (issue 15, "Bounded memory"): per-frame mattes and
landmarks go to disk-backed stores; only the smoothed landmarks and poses (~6 KB a frame) stay in memory.
The README states the figure for a 3,000-frame clip (measured with out/long, concatenated fixtures)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from relight_core import io, track


class RepeatedFrame:
    """Footage of one frame shown n times (generated, not held in a list)."""

    def __init__(self, rgb: np.ndarray, n: int) -> None:
        self.rgb, self.n_frames, self.fps, self.name = rgb, n, 25.0, "repeat"
        self.height, self.width = rgb.shape[:2]
        self.frame_indices = list(range(n))

    def __iter__(self):
        for i in range(self.n_frames):
            yield i, self.rgb


def traced_peak(footage) -> tuple[int, track.Analysis]:
    tracemalloc.start()
    try:
        a = track.analyze_footage(footage, adapt_shape=False)  # its sample of 200 frames is bounded anyway
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, a


@pytest.mark.slow
def test_tracking_memory_does_not_grow_per_frame(astronaut):
    rgb = io.decode_srgb8(np.ascontiguousarray(astronaut[::4, ::4]))
    track.analyze_footage(RepeatedFrame(rgb, 2))  # MediaPipe's one-off allocations happen here
    short_peak, short = traced_peak(RepeatedFrame(rgb, 20))
    long_peak, long = traced_peak(RepeatedFrame(rgb, 80))
    per_frame = (long_peak - short_peak) / 60.0
    # before: landmarks, mattes and head mattes in lists, stacked and copied at the end (~150 KB a frame
    # here); now the smoothed landmarks (478 x 3 float32 = 5.7 KB) and small per-frame scalars
    assert per_frame < 12_000, f"{per_frame:.0f} bytes per frame"
    assert long.n_frames == 80 and long.valid.all()
    np.testing.assert_array_equal(long.matte[0], short.matte[0])


def test_saved_analysis_reads_back(tmp_path, astronaut):
    rgb = io.decode_srgb8(np.ascontiguousarray(astronaut[::4, ::4]))
    a = track.analyze_footage(RepeatedFrame(rgb, 3))
    a.save(str(tmp_path / "a.npz"))
    b = track.Analysis.load(str(tmp_path / "a.npz"))
    for name in ("landmarks", "landmarks_raw", "matte", "head_matte", "cam_from_head", "valid", "head_box"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), getattr(b, name), err_msg=name)
    assert b.source == a.source and b.source["frames"] == [0, 3]
