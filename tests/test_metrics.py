"""Metrics on synthetic cases with known answers (relight_core.eval.metrics / identity)."""

from __future__ import annotations

import numpy as np
import pytest

from relight_core.eval import identity, metrics


def _texture(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture in [0.15, 0.85] (display values), good for optical flow."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.random((h, w, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (0.15 + 0.7 * smooth).astype(np.float32)


def _dpr_basis(n: np.ndarray) -> np.ndarray:
    """Independent reference: DPR's SH basis with the Lambertian factors folded in; (N, 3) -> (N, 9)."""
    x, y, z = n[:, 0], n[:, 1], n[:, 2]
    a0, a1, a2 = np.pi, 2 * np.pi / 3, np.pi / 4
    c1, c2 = np.sqrt(3) / 2 / np.sqrt(np.pi), np.sqrt(15) / 2 / np.sqrt(np.pi)
    c6, c8 = np.sqrt(5) / 4 / np.sqrt(np.pi), np.sqrt(15) / 4 / np.sqrt(np.pi)
    return np.stack([np.full_like(x, 0.5 / np.sqrt(np.pi) * a0), c1 * y * a1, c1 * z * a1, c1 * x * a1,
                     c2 * x * y * a2, c2 * y * z * a2, c6 * (3 * z ** 2 - 1) * a2,
                     c2 * x * z * a2, c8 * (x ** 2 - y ** 2) * a2], axis=1)


DPR_LIGHT_00 = np.array([1.0841, -0.4643, 0.0284, 0.6765, -0.3594, 0.0479, -0.2280, -0.0813, 0.2881])


# --------------------------------------------------------------------------------------------- lighting


def test_lighting_error_ignores_global_scale_and_colour_of_albedo():
    rgb = np.outer(DPR_LIGHT_00, [0.9, 0.6, 0.4])  # a grey light times a skin colour
    assert metrics.lighting_error(rgb, DPR_LIGHT_00) == pytest.approx(0.0, abs=1e-12)
    assert metrics.lighting_error(3.0 * DPR_LIGHT_00, DPR_LIGHT_00) == pytest.approx(0.0, abs=1e-12)


# A constant light (DC only) shades every normal alike: s = 1. Adding an X (image-right) term b gives
# E = pi/(2 sqrt(pi)) + b sqrt(pi/3) x, so s = 1 + k x with k = b * 2/sqrt(3) (the mean of x over the
# front normals is 0). Over cosine-weighted front normals E[x^2] = 1/4 and E|x| = 4 / (3 pi).
CONST = np.array([1.0, 0, 0, 0, 0, 0, 0, 0, 0])
SIDE = np.array([1.0, 0, 0, 0.5, 0, 0, 0, 0, 0])
K_SIDE = 0.5 * 2 / np.sqrt(3)


def test_front_normals_are_cosine_weighted_toward_the_camera():
    n = metrics.front_normals()
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-12)
    assert np.all(n[:, 1] <= 0)  # DPR: the viewer looks along +Y, so visible normals have Y <= 0
    assert np.mean(n[:, 1] ** 2) == pytest.approx(0.5, rel=0.01)  # cosine-weighted: E[cos^2] = 1/2
    assert abs(np.mean(n[:, 0])) < 0.01 and abs(np.mean(n[:, 2])) < 0.01


def test_lighting_error_known_value():
    assert metrics.lighting_error(CONST, SIDE) == pytest.approx(K_SIDE ** 2 / 4, rel=0.01)
    assert np.isnan(metrics.lighting_error(np.zeros(9), SIDE))


def test_lighting_instability_is_mean_std_of_normalised_shading():
    assert metrics.lighting_instability([SIDE, SIDE, 5 * SIDE]) == pytest.approx(0.0, abs=1e-12)
    # two samples 1 and 1 + k x: std |k x| / 2 at each normal
    expected = K_SIDE / 2 * 4 / (3 * np.pi)
    assert metrics.lighting_instability([CONST, SIDE]) == pytest.approx(expected, rel=0.01)
    with_nan = [CONST, SIDE, np.full(9, np.nan)]
    assert metrics.lighting_instability(with_nan) == pytest.approx(expected, rel=0.01)
    assert np.isnan(metrics.lighting_instability([CONST]))


def test_known_light_fitted_back_gives_le_zero():
    # an orthographic sphere seen by the camera: DPR frame, the viewer looks along +Y
    h = w = 96
    u, v = np.meshgrid((np.arange(w) + 0.5) / w * 2 - 1, 1 - (np.arange(h) + 0.5) / h * 2)
    inside = u ** 2 + v ** 2 < 0.95
    normals = np.zeros((h, w, 3))
    normals[..., 0], normals[..., 2] = u, v
    normals[..., 1] = -np.sqrt(np.clip(1 - u ** 2 - v ** 2, 0, None))
    albedo = np.array([0.7, 0.5, 0.4])
    shading = (_dpr_basis(normals.reshape(-1, 3)) @ DPR_LIGHT_00).reshape(h, w)
    image = (shading[..., None] * albedo).astype(np.float32)
    est = metrics.estimate_light(image, normals, inside.astype(np.float32))
    assert est is not None and est.shape == (9, 3)
    assert metrics.lighting_error(est, DPR_LIGHT_00) < 1e-6
    other = DPR_LIGHT_00 * np.array([1, -1, 1, -1, 1, 1, 1, 1, 1])  # mirrored left-right
    assert metrics.lighting_error(est, other) > 0.05
    assert metrics.estimate_light(image, normals, np.zeros((h, w))) is None


def test_cam_rotation_to_dpr_maps_camera_axes():
    # 90 deg about the camera's +y (up) axis: cam +x -> cam -z, i.e. DPR +X -> DPR +Y
    r_cam = np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    r = metrics.cam_rotation_to_dpr(r_cam)
    np.testing.assert_allclose(r @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(r @ [0, 0, 1], [0, 0, 1], atol=1e-12)  # DPR Z = cam y, the axis


# --------------------------------------------------------------------------------------------- temporal


def test_static_scene_has_zero_warping_error():
    img = _texture()
    frames = [img] * 4
    flows = metrics.flows_for(frames)
    we = metrics.warping_errors(frames, flows)
    assert we.shape == (3,)
    assert np.all(we < 1e-8)
    np.testing.assert_allclose(metrics.temporal_ssim(frames), 1.0, atol=1e-9)


def test_shifted_image_with_its_true_flow_has_zero_warping_error():
    img = _texture()
    dx, dy = 3, -2
    moved = np.roll(img, (dy, dx), axis=(0, 1))  # moved(x) = img(x - d)
    fb = np.broadcast_to(np.array([-dx, -dy], np.float32), img.shape[:2] + (2,)).copy()
    mask = metrics.consistency_mask(fb, -fb)
    border = np.zeros(img.shape[:2], bool)
    border[4:-4, 4:-4] = True  # np.roll wraps around; the warp's own inside test handles the rest
    assert metrics.warping_error(img, moved, fb, mask & border) < 1e-12
    # with DIS flow estimated on the frames themselves: far below the error of not warping at all
    flows = metrics.flows_for([img, moved])
    we_flow = metrics.warping_errors([img, moved], flows, rois=[border, border])[0]
    we_none = metrics.warping_error(img, moved, np.zeros_like(fb), border)
    assert we_flow < 0.05 * we_none


def test_occlusion_mask_rejects_inconsistent_flow():
    fb = np.zeros((20, 30, 2), np.float32)
    ff = np.zeros_like(fb)
    ff[5:10, 5:10] = 4.0  # forward flow disagrees with the backward flow here
    m = metrics.consistency_mask(fb, ff)
    assert not m[5:10, 5:10].any() and m[12:, 12:].all()


def test_injected_flicker_raises_we_and_lowers_tssim_by_the_expected_amount():
    base = _texture()
    k = 1.1  # every other frame 10 % brighter
    frames = [base if t % 2 == 0 else k * base for t in range(5)]
    flows = metrics.flows_for([base] * 5)  # flow on the (static) input footage
    we = metrics.warping_errors(frames, flows)
    expected_we = float(np.mean(((k - 1) * base.astype(np.float64)) ** 2))
    np.testing.assert_allclose(we, expected_we, rtol=1e-3)
    # relative to the input's own WE (0 here) and a flicker-free output (also 0): flicker dominates
    assert metrics.warping_errors([base] * 5, flows).max() < 1e-8

    # tSSIM of a constant grey c against k*c: only the luminance term of SSIM drops,
    # (2 k c^2 + C1) / ((1 + k^2) c^2 + C1) with C1 = (0.01 * data_range)^2
    c = 0.5
    flat = np.full((32, 32, 3), c, np.float32)
    ts = metrics.temporal_ssim([flat, k * flat, flat])
    c1 = 0.01 ** 2
    np.testing.assert_allclose(ts, (2 * k * c * c + c1) / ((1 + k * k) * c * c + c1), rtol=1e-6)
    # on texture: stronger flicker, lower tSSIM
    t_small = metrics.temporal_ssim([base, 1.05 * base]).mean()
    t_big = metrics.temporal_ssim([base, 1.2 * base]).mean()
    assert 1.0 > t_small > t_big


# --------------------------------------------------------------------------------------------- others


def test_pose_error_and_psnr_known_values():
    a = np.radians(10.0)
    r = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    cam2head = np.eye(4)
    cam2head[:3, :3] = r
    tracked = np.eye(4)
    tracked[:3, :3] = r.T  # exactly the requested view
    assert metrics.pose_error_deg(cam2head, tracked) == pytest.approx(0.0, abs=1e-6)
    assert metrics.pose_error_deg(cam2head, np.eye(4)) == pytest.approx(10.0)

    img = np.full((10, 10, 3), 0.5)
    other = img + 0.1
    other[:5] = 0.0  # outside the mask
    mask = np.zeros((10, 10))
    mask[5:] = 1
    assert metrics.masked_psnr(img, other, mask) == pytest.approx(20.0)
    assert metrics.masked_psnr(img, img) == float("inf")


def test_identity_same_face_close_other_face_far(astronaut, fixtures_dir):
    if not identity.available():
        pytest.skip(identity.unavailable_reason())
    import cv2

    emb = identity.FaceEmbedder()
    e1 = emb.embed(astronaut)
    assert e1 is not None and e1.shape == (128,)
    assert identity.id_distance(e1, emb.embed(astronaut.copy())) < 1e-6
    brighter = np.clip(astronaut.astype(np.float32) * 1.15, 0, 255).astype(np.uint8)
    d_same = identity.id_distance(e1, emb.embed(brighter))
    other = cv2.imread(str(fixtures_dir / "photos" / "sad_people_0.png"))[:, :, ::-1]
    d_other = identity.id_distance(e1, emb.embed(np.ascontiguousarray(other)))
    assert d_same < 0.3 < 0.6 < d_other
    assert np.isnan(identity.id_distance(None, e1))
    assert emb.embed(np.zeros((64, 64, 3), np.uint8)) is None
