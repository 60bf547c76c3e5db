"""track.py: smoothing, the derived neutral face, tracking the astronaut and real clips, pose vs EG3D
cameras, no-face bridging, several faces, analysis files and the analyze command."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest

from relight_core import camera as cam
from relight_core import face_model, track
from relight_core.errors import UserError


def view_angles(cam_from_head: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees of the camera POSITION seen from the head centre (independent of where
    the face sits in the frame)."""
    p = cam.invert_pose(cam_from_head)[:3, 3]
    return float(np.degrees(np.arctan2(p[0], p[2]))), float(np.degrees(np.arcsin(p[1] / np.linalg.norm(p))))


# --------------------------------------------------------------------------------------------- smoothing

def test_one_euro_removes_jitter_and_zero_phase_has_no_lag() -> None:
    rng = np.random.default_rng(0)
    n, fps = 200, 25.0
    truth = np.zeros((n, 1, 2))
    truth[100:, 0, 0] = 10.0  # a step after a still stretch
    noisy = truth + rng.normal(scale=0.5, size=truth.shape)
    out = track.smooth_sequence(noisy, track.OneEuroParams(min_cutoff=1.0, beta=0.0), fps, zero_phase=True)
    still_before = np.std(np.diff(noisy[10:90, 0, 0]))
    still_after = np.std(np.diff(out[10:90, 0, 0]))
    assert still_after < 0.25 * still_before
    # zero phase: the smoothed step crosses half height at the step, a causal filter crosses it later
    slow = track.OneEuroParams(min_cutoff=1.0, beta=0.0)
    causal = track.smooth_sequence(noisy, slow, fps, zero_phase=False)
    half = lambda x: int(np.argmax(x[:, 0, 0] > 5.0))  # noqa: E731
    assert abs(half(out) - 100) <= 1 and half(causal) > half(out)
    # the speed term opens the filter: with beta the causal step is followed faster
    fast = track.smooth_sequence(noisy, track.OneEuroParams(min_cutoff=1.0, beta=5.0), fps, scale=10.0,
                                 zero_phase=False)
    assert half(fast) <= half(causal)


# --------------------------------------------------------------------------------------------- neutral face

def test_neutral_face_is_symmetric_and_in_head_units() -> None:
    nf = face_model.neutral_face()
    assert nf.shape == (478, 3)
    pairs = face_model.mirror_pairs(nf)
    assert np.array_equal(pairs[pairs], np.arange(478))
    midline = [0, 1, 2, 4, 5, 6, 8, 9, 10, 151, 152, 164, 168, 175, 195, 197, 199, 200]
    assert np.all(pairs[midline] == midline)
    assert np.allclose(nf[pairs] * [-1, 1, 1], nf, atol=1e-9)
    eye_r = nf[list(face_model.RIGHT_EYE_CORNERS)].mean(axis=0)
    eye_l = nf[list(face_model.LEFT_EYE_CORNERS)].mean(axis=0)
    assert np.linalg.norm(eye_l - eye_r) == pytest.approx(cam.INTEROCULAR)
    assert eye_l[0] > 0 > eye_r[0]  # the subject's left eye is at head +x (image right)
    assert nf[10, 1] > nf[1, 1] > nf[152, 1]  # forehead above nose tip above chin
    assert nf[1, 2] == pytest.approx(nf[:, 2].max(), abs=0.02)  # the nose tip is frontmost
    width = nf[:, 0].max() - nf[:, 0].min()
    assert 0.35 < width < 0.6


# --------------------------------------------------------------------------------------------- astronaut

def test_head_crop_matte_drops_the_background_by_the_jaw(astronaut: np.ndarray, tmp_path: Path) -> None:
    """The astronaut's head is small in the frame: the whole-frame matte keeps strips of the backdrop
    between jaw, hair and collar; the head crop's matte leaves them out. The pixels it removes look like
    the backdrop around the head, not like the person; saved and loaded, the analysis gives the same."""
    a = track.analyze_footage(track.ArrayFootage([astronaut]))
    assert a.head_box is not None and a.head_box[0, 2] > a.head_box[0, 0]
    x0, y0, x1, y1 = a.head_box[0]
    new = a.matte_at(0, 512, 512)
    old = track.Analysis(**{**a.__dict__, "head_box": None, "head_matte": None}).matte_at(0, 512, 512)
    img = astronaut.astype(np.float64)
    crop = np.zeros((512, 512), bool)
    crop[y0:y1, x0:x1] = True
    removed = crop & (old > 0.5) & (new < 0.5)
    backdrop = crop & (old < 0.1) & (new < 0.1)
    person = crop & (old > 0.9) & (new > 0.9)
    assert removed.sum() > 300
    colour = img[removed].mean(axis=0)
    to_backdrop = np.linalg.norm(colour - img[backdrop].mean(axis=0))
    assert to_backdrop < np.linalg.norm(colour - img[person].mean(axis=0))
    assert (person.sum() + removed.sum()) > 0.95 * (crop & (old > 0.9)).sum()  # the person itself stays
    a.save(str(tmp_path / "a.npz"))
    assert np.array_equal(track.Analysis.load(str(tmp_path / "a.npz")).matte_at(0, 512, 512), new)


def test_head_crop_mattes_follow_a_moving_head(astronaut: np.ndarray) -> None:
    """A pan (the portrait slides 6 px a frame): each frame's head crop moves with the head, so the
    temporal filter, which averages neighbouring head mattes in crop coordinates, keeps the matte on the
    head (averaged in frame coordinates instead, it would trail: 0.014 here, 0.045 at 20 px a frame)."""
    import cv2

    frames = [cv2.warpAffine(astronaut, np.float32([[1, 0, 6 * t], [0, 1, 0]]), (512, 512),
                             borderMode=cv2.BORDER_REPLICATE) for t in range(5)]
    a = track.analyze_footage(track.ArrayFootage(frames))
    assert a.head_box is not None
    assert np.allclose(np.diff(a.head_box[:, 0]), 6, atol=2)
    ref = a.matte_at(0, 512, 512)
    x0, y0, x1, y1 = a.head_box[0]
    for t in range(1, 5):
        back = np.roll(a.matte_at(t, 512, 512), -6 * t, axis=1)  # slide the head back over frame 0's
        assert np.abs(back - ref)[y0:y1, x0 + 30:x1 - 30].mean() < 0.012


def test_astronaut_landmarks_and_frontal_pose(astronaut: np.ndarray) -> None:
    tracker = track.FaceTracker(static=True, smoothing=None)
    ft = tracker.process(astronaut)
    tracker.close()
    assert ft is not None and ft.landmarks.shape == (478, 3) and ft.face_count == 1
    # landmarks lie on her face (upper middle of the image)
    cx, cy = ft.landmarks[:, :2].mean(axis=0)
    assert 170 < cx < 280 and 60 < cy < 200
    yaw, pitch = view_angles(ft.cam_from_head)
    assert abs(yaw) < 10 and abs(pitch) < 20
    assert ft.pose_error_px < 3.0
    assert ft.cam_from_head[2, 3] < 0  # the head is in front of the camera


def test_analyze_linear_input_matches_uint8(astronaut: np.ndarray) -> None:
    from relight_core import io

    a8 = track.analyze_footage(track.ArrayFootage([astronaut]))
    alin = track.analyze_footage(track.ArrayFootage([io.decode_srgb8(astronaut)]))
    assert np.abs(a8.landmarks - alin.landmarks).max() < 1.0
    assert a8.matte.shape[1:] == track.matte_shape(512, 512) and a8.matte.dtype == np.uint8


def test_no_face_frames_are_bridged_and_no_face_at_all_fails(astronaut: np.ndarray) -> None:
    blank = np.zeros_like(astronaut)
    a = track.analyze_footage(track.ArrayFootage([astronaut, blank, astronaut]), static=True)
    assert a.valid.tolist() == [True, False, True]
    assert np.allclose(a.landmarks[1], a.landmarks[0], atol=1.0)
    assert np.allclose(a.cam_from_head[1], a.cam_from_head[0], atol=1e-2)
    assert any("no face" in w for w in a.warnings)
    with pytest.raises(UserError, match="No face"):
        track.analyze_footage(track.ArrayFootage([blank, blank], name="empty_clip"))


def test_several_faces_keeps_the_largest(astronaut: np.ndarray) -> None:
    import cv2

    crop = astronaut[0:300, 100:350]
    canvas = np.full((320, 560, 3), 128, np.uint8)
    canvas[10:310, 10:260] = crop
    canvas[60:264, 330:500] = cv2.resize(crop, (170, 204))
    a = track.analyze_footage(track.ArrayFootage([canvas]))
    assert a.face_count[0] == 2
    assert a.landmarks[0, :, 0].mean() < 260  # the big face on the left
    assert any("several faces" in w for w in a.warnings)


def test_analysis_save_load_round_trip(astronaut: np.ndarray, tmp_path: Path) -> None:
    a = track.analyze_footage(track.ArrayFootage([astronaut, astronaut], fps=30.0, name="two"))
    path = tmp_path / "a.npz"
    a.save(str(path))
    b = track.Analysis.load(str(path))
    assert b.n_frames == 2 and b.fps == 30.0 and b.name == "two" and b.version == track.ANALYSIS_VERSION
    for key in ("landmarks", "valid", "cam_from_head", "K", "matte", "face_count", "frame_indices"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    m = b.matte_at(0, 100, 120)
    assert m.shape == (100, 120) and m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="bad.npz"):
        track.Analysis.load(str(bad))


def test_analyze_command(tmp_path: Path, astronaut: np.ndarray) -> None:
    from relight_core import io
    from relight_core.cli import main

    src = tmp_path / "astro.png"
    io.write_png(src, io.decode_srgb8(astronaut))
    out = tmp_path / "shot" / "analysis.npz"  # a folder that does not exist yet is created
    prev = tmp_path / "prev"
    assert main(["analyze", str(src), "-o", str(out), "--preview", str(prev), "--fov", "25"]) == 0
    a = track.Analysis.load(str(out))
    assert a.n_frames == 1 and a.valid[0] and a.fov_deg == 25.0
    names = sorted(p.name for p in (tmp_path / "prev").glob("*.png"))
    assert names == [f"astro_000000_{s}.png" for s in ("depth", "labels", "landmarks", "normals")]
    assert main(["analyze", str(tmp_path / "missing.mp4"), "-o", str(out)]) == 2
    assert main(["analyze", str(src), "-o", str(out), "--frames", "5:2"]) == 2


# --------------------------------------------------------------------------------------------- fixtures

@pytest.mark.parametrize("clip,frames", [("lp_d0", (0, 78)), ("lp_d9", (0, 587)), ("lp_d18", (0, 216)),
                                         ("vr_4", (0, 199))])
def test_fixture_clips_tracked_on_every_frame(fixtures_dir: Path, clip: str, frames: tuple[int, int]) -> None:
    """Every frame, at 256 px (the full-size run finds a face on every frame as well), without the matte."""
    from relight_core import io

    footage = io.open_footage(fixtures_dir / "videos" / f"{clip}.mp4", frames=frames, size=256)
    a = track.analyze_footage(footage, matte=False)
    assert a.valid.all(), f"{clip}: no face on frames {np.flatnonzero(~a.valid).tolist()}"
    assert np.all(a.face_count == 1)
    iod = np.array([face_model.face_size_px(lm) for lm in a.landmarks])
    assert np.median(a.pose_error_px / iod) < 0.1  # rigid fit residual under 10 % of the eye distance


def test_trudeau_pose_agrees_with_eg3d_cameras(fixtures_dir: Path) -> None:
    from relight_core import io

    folder = fixtures_dir / "videos" / "pr_trudeau_frames"
    footage = io.open_footage(folder / "cropped", frames=(0, 60))
    fov = cam.fov_from_intrinsics(cam.EG3D_FOCAL, 1.0)  # EG3D's true vertical FOV, 13.38 deg
    a = track.analyze_footage(footage, fov_deg=fov, matte=False)
    cams = sorted(glob.glob(str(folder / "camera" / "*.npy")))[:60]
    ref = np.array([cam.cam2head_to_yaw_pitch_roll(cam.eg3d_cam2world_to_cam2head(np.load(c))) for c in cams])
    ours = np.array([cam.cam2head_to_yaw_pitch_roll(cam.invert_pose(m)) for m in a.cam_from_head])
    diff = np.abs(ours - ref).mean(axis=0)
    # measured on all 100 frames: mean |difference| yaw 0.65, pitch 1.18, roll 0.29 degrees
    assert diff[0] < 1.5  # yaw
    assert diff[1] < 3.0  # pitch (includes a constant offset between the two "frontal" conventions)
    assert diff[2] < 1.0  # roll
    assert np.corrcoef(ours[:, 0], ref[:, 0])[0, 1] > 0.9
    # fitting the clip's own face shape makes the rigid fit tighter than the generic neutral face
    b = track.analyze_footage(footage, fov_deg=fov, matte=False, adapt_shape=False)
    assert np.median(a.pose_error_px) < 0.5 * np.median(b.pose_error_px)


def test_still_head_jitter_is_smoothed(fixtures_dir: Path) -> None:
    """lp_d9 frames 30-55 are the stillest stretch of the clip (found over all 587 frames)."""
    from relight_core import io

    footage = io.open_footage(fixtures_dir / "videos" / "lp_d9.mp4", frames=(24, 62))
    a = track.analyze_footage(footage, matte=False)
    rigid = list(face_model.RIGID_LANDMARKS)

    def accel(x: np.ndarray) -> float:  # RMS second difference (px / frame^2) of the rigid landmarks
        x = x[6:-6, rigid, :2].astype(np.float64)
        return float(np.sqrt(np.mean(np.sum((x[2:] - 2 * x[1:-1] + x[:-2]) ** 2, axis=-1))))

    raw, smooth = accel(a.landmarks_raw), accel(a.landmarks)
    assert smooth < 0.4 * raw, (raw, smooth)
    # the head pose from the smoothed track turns less from frame to frame than one from raw landmarks
    raw_poses, prev = [], None
    for lm in a.landmarks_raw:
        prev, _ = track.solve_pose(lm, a.K, prev)
        raw_poses.append(prev)

    def turn(ps: list) -> float:  # mean rotation between consecutive frames, degrees
        return float(np.mean([cam.rotation_angle_deg(ps[i], ps[i + 1]) for i in range(6, len(ps) - 7)]))

    assert turn(list(a.cam_from_head)) < 0.5 * turn(raw_poses)


def test_streaming_tracker_smooths_and_resets(astronaut: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    tracker = track.FaceTracker(static=False, smoothing=track.OneEuroParams(min_cutoff=0.5, beta=0.0))
    base = tracker.process(astronaut)
    assert base is not None
    shifts = []
    for _ in range(4):
        noisy = np.clip(astronaut.astype(np.int16) + rng.integers(-6, 7, astronaut.shape), 0, 255)
        ft = tracker.process(noisy.astype(np.uint8))
        shifts.append((np.abs(ft.landmarks - base.landmarks).mean(),
                       np.abs(ft.raw_landmarks - base.landmarks).mean()))
    # the filtered landmarks move less than the raw ones under image noise
    assert np.mean([s[0] for s in shifts]) < np.mean([s[1] for s in shifts])
    tracker.reset()  # a fresh MediaPipe graph: timestamps start again, filters forget
    again = tracker.process(astronaut)
    assert again is not None and np.allclose(again.landmarks, again.raw_landmarks)
    tracker.close()
