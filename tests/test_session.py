"""The clip session: one per-frame path for the batch and the live preview.

A short "clip" is made from scikit-image's astronaut (a real face): an image sequence whose frames drift
by a pixel a frame, so that tracking, the light track and the flow filter all have real work to do.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from relight_core import io, layout, lighting, pipeline, session, views
from relight_core.errors import UserError

SIZE = 192


def write_clip(folder: Path, astronaut: np.ndarray, n: int) -> Path:
    """n frames (SIZE x SIZE PNGs) of the astronaut's head, drifting right by one source pixel a frame."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        crop = astronaut[10:330, 60 + i % 40:380 + i % 40]
        cv2.imwrite(str(folder / f"f_{i:04d}.png"), cv2.resize(crop, (SIZE, SIZE),
                                                               interpolation=cv2.INTER_AREA)[..., ::-1])
    return folder


@pytest.fixture(scope="module")
def clip12(tmp_path_factory, astronaut) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip12"), astronaut, 12)


@pytest.fixture(scope="module")
def opened(clip12, tmp_path_factory) -> session.ClipSession:
    s = session.ClipSession(clip12, cache_dir=tmp_path_factory.mktemp("cache"))
    s.open()
    return s


def look(light, view=None, passes=("rgba",)) -> session.Look:
    return session.Look(lighting.load_target_lighting(light), views.ViewPlan(view, 12), passes)


def test_open_tracks_once_and_knows_the_whole_clips_light(clip12, opened, tmp_path):
    assert opened.light.complete and opened.analysis.n_frames == 12
    again = session.ClipSession(clip12, cache_dir=opened.cache_dir)
    events = []
    again.open(events.append)
    assert again.analysis_cached, "the analysis kept in the cache folder is reused"
    assert not any(e["stage"] == "light" for e in events), "the stored input-light track is reused"
    assert np.array_equal(again.light.smoothed(), opened.light.smoothed())


def test_lighting_change_reshades_from_the_cache_and_is_repeatable(opened):
    first, info_a = opened.render(5, look("rembrandt"))
    other, info_b = opened.render(5, look("split"))
    again, info_a2 = opened.render(5, look("rembrandt"))
    assert info_b["cached"] and info_a2["cached"]
    assert info_a2["ms"]["geometry"] == 0 and info_a2["ms"]["intrinsic"] == 0 and info_a2["ms"]["decode"] == 0
    assert np.array_equal(first["rgba"], again["rgba"]), "the same light gives the same frame, bit for bit"
    assert np.abs(first["rgba"] - other["rgba"]).max() > 0.05, "another light gives another frame"


def test_view_change_reprojects_from_the_cache(opened):
    front, _ = opened.render(7, look("soft-front"))
    turned, info = opened.render(7, look("soft-front", {"yaw": 20.0, "pitch": 10.0}, ("rgba", "normal")))
    assert info["cached"] and info["ms"]["geometry"] == 0
    assert set(turned) == {"rgba", "normal"}
    assert np.abs(front["rgba"] - turned["rgba"]).mean() > 0.005


def test_a_frame_outside_the_clip_is_one_sentence(opened):
    with pytest.raises(UserError, match="Frame 40 is not in the open clip"):
        opened.render(40, look("soft-front"))


def test_preview_matches_the_batch_render_of_the_same_frame(clip12, tmp_path):
    """The preview shares the batch's analysis and input-light track and approximates its albedo filter:
    inside the matte it is within 35 dB of the batch frame (measured 47-58 dB on the fixture clips)."""
    out = tmp_path / "batch"
    pipeline.run(pipeline.RelightJob(input=str(clip12), output=str(out), lighting="rembrandt", resume=False))
    assert layout.light_track_file(out, SIZE, SIZE).is_file(), "a full run stores the clip's light track"
    preview = session.ClipSession(clip12, cache_dir=out)
    preview.open()
    for k in (3, 11):
        layers, _ = preview.render(k, look("rembrandt"))
        batch = cv2.imread(str(out / "rgba" / f"{clip12.name}_{k:06d}.png"), cv2.IMREAD_UNCHANGED)
        inside = batch[..., 3] > 128
        mine = io.encode_srgb8(layers["rgba"][..., :3]).astype(np.float64)
        mse = ((mine - batch[..., 2::-1])[inside] ** 2).mean()
        psnr = 10 * np.log10(255 ** 2 / max(mse, 1e-12))
        print(f"frame {k}: preview vs batch PSNR inside the matte {psnr:.1f} dB")
        assert psnr >= 35.0


def test_a_second_run_with_the_stored_light_track_gives_the_same_frames(clip12, tmp_path):
    out = tmp_path / "twice"
    job = pipeline.RelightJob(input=str(clip12), output=str(out), lighting="split", resume=False)
    pipeline.run(job)
    first = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((out / "rgba").glob("*.png"))]
    pipeline.run(job)  # reads the light from the stored track instead of estimating it
    second = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((out / "rgba").glob("*.png"))]
    assert len(first) == 12 and all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.slow
def test_cache_memory_stays_under_its_bound_over_a_300_frame_walk(tmp_path, astronaut):
    clip = write_clip(tmp_path / "clip300", astronaut, 300)
    s = session.ClipSession(clip, cache_mb=8)
    s.open()
    light = look("rembrandt")
    largest = 0.0
    for k in list(range(300)) + list(range(0, 300, 7)):
        s.render(k, light)
        assert s.held_mb() == pytest.approx(s.cached_mb), "the running count is what the cache holds"
        largest = max(largest, s.held_mb())
    print(f"largest cache over the walk: {largest:.2f} MB (bound 8)")
    assert 0 < largest <= 8.0
