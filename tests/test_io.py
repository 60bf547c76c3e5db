"""Footage reading and atomic frame writing (relight_core.io)."""

from __future__ import annotations

import numpy as np
import pytest

from relight_core import io
from relight_core.errors import UserError


def test_srgb_round_trip_and_luts():
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    assert np.allclose(io.srgb_to_linear(io.linear_to_srgb(x)), x, atol=1e-5)
    codes = np.arange(256, dtype=np.uint8)
    assert np.array_equal(io.encode_srgb8(io.decode_srgb8(codes)), codes)


def test_png_sequence_round_trip(tmp_path, astronaut):
    lin = io.decode_srgb8(astronaut)
    for k in range(3):
        io.write_png(tmp_path / f"f_{k + 8}.png", lin)  # natural sort: 8, 9, 10
    fp = io.open_footage(tmp_path, frames=(1, 3), size=256)
    assert (fp.width, fp.height, fp.n_frames, fp.frame_indices) == (256, 256, 2, [1, 2])
    frames = list(fp)
    assert [i for i, _ in frames] == [1, 2]
    assert frames[0][1].shape == (256, 256, 3) and frames[0][1].dtype == np.float32
    full = io.open_footage(tmp_path / "f_8.png")
    assert np.abs(full.read(0) - lin).max() < 1e-6
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_rgba_png_keeps_straight_alpha(tmp_path):
    img = np.zeros((4, 5, 4), np.float32)
    img[..., 0] = 0.5
    img[..., 3] = np.linspace(0, 1, 5)
    io.write_png(tmp_path / "a.png", img)
    import cv2

    back = cv2.imread(str(tmp_path / "a.png"), cv2.IMREAD_UNCHANGED)
    assert back.shape == (4, 5, 4)
    assert np.array_equal(back[0, :, 3], np.round(np.linspace(0, 255, 5)).astype(np.uint8))
    assert back[0, 0, 2] == io.encode_srgb8(np.float32(0.5))


def test_exr_multilayer_round_trip(tmp_path):
    rgb = np.random.default_rng(0).random((6, 7, 3)).astype(np.float32) * 4
    depth = np.arange(42, dtype=np.float32).reshape(6, 7)
    io.write_exr(tmp_path / "x.exr", {"rgba": np.dstack([rgb, np.ones((6, 7))]), "depth": depth})
    import OpenEXR

    with OpenEXR.File(str(tmp_path / "x.exr"), separate_channels=True) as f:
        ch = f.channels()
        assert {"rgba.R", "rgba.A", "depth.Y"} <= set(ch)
        assert np.array_equal(ch["depth.Y"].pixels, depth)
    assert np.allclose(io.read_exr(tmp_path / "x.exr"), rgb, rtol=2e-3)


def test_mp4_write_and_read(tmp_path):
    frames = [np.full((31, 40, 3), v, np.float32) for v in (0.1, 0.5, 0.9)]
    assert io.write_mp4(tmp_path / "c.mp4", iter(frames), fps=10) == 3
    fp = io.open_footage(tmp_path / "c.mp4")
    assert fp.n_frames == 3 and fp.fps == pytest.approx(10)
    got = [f.mean() for _, f in fp]
    assert got[0] < got[1] < got[2]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.png"
    with pytest.raises(RuntimeError), io.atomic_write(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name,content,msg", [
    ("missing.mp4", None, "does not exist"),
    ("broken.mp4", b"not a movie", "could not be decoded"),
    ("broken.png", b"\x89PNG trunc", "could not be decoded"),
    ("notes.txt", b"hello", "not a supported"),
])
def test_bad_inputs_are_one_sentence(tmp_path, name, content, msg):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=msg) as err:
        list(io.open_footage(path))
    assert str(path.name) in str(err.value) and "\n" not in str(err.value)


def test_bad_frame_range_and_empty_folder(tmp_path, astronaut):
    with pytest.raises(UserError, match="holds no images"):
        io.open_footage(tmp_path)
    io.write_png(tmp_path / "a.png", io.decode_srgb8(astronaut))
    with pytest.raises(UserError, match="outside"):
        io.open_footage(tmp_path, frames=(0, 5))
