"""Input-light estimation and albedo separation on a rendered sphere with known light and albedo."""

from __future__ import annotations

import numpy as np
from test_render import sphere_maps

from relight_core import intrinsic

SKIN = np.array([0.62, 0.44, 0.34], np.float32)


def scene(size: int = 160):
    """A textured 'skin' sphere under a coloured SH light -> (img, n_dpr, labels, light, albedo, mask)."""
    _, n, mask, _ = sphere_maps(size)
    n_dpr = intrinsic.cam_to_dpr_normals(n)
    light = np.zeros((9, 3))
    light[0] = [2.0, 1.9, 1.8]
    light[3] = [0.9, 0.8, 0.7]  # from image right
    light[2] = [0.5, 0.5, 0.5]  # from above
    light[1] = [-0.4, -0.4, -0.5]  # from the front (DPR -Y is toward the viewer)
    yy, xx = np.mgrid[0:size, 0:size]
    albedo = SKIN[None, None, :] * (1.0 + 0.08 * np.sin(xx / 5.0) * np.cos(yy / 7.0))[..., None]
    albedo = albedo.astype(np.float32) * mask[..., None]
    light *= 0.45  # keep the rendered image below the saturation cut (LDR-like)
    img = albedo * intrinsic.shade_image(n_dpr, light, mask)
    return img.astype(np.float32), n_dpr, mask.astype(np.uint8), light, albedo, mask


def test_estimated_light_has_the_true_shape_and_grey_dc():
    img, n_dpr, labels, light, _, mask = scene()
    est, rho = intrinsic.estimate_input_light(img, n_dpr, labels)
    # only the camera-facing hemisphere is seen: compare the shading there, up to the global scale
    vis = (n_dpr[..., 1] < -0.2) & (mask > 0)
    s_est = intrinsic.shade_image(n_dpr, est, vis)[vis] @ intrinsic.LUMA
    s_true = intrinsic.shade_image(n_dpr, light, vis)[vis] @ intrinsic.LUMA
    rel = s_est / s_est.mean() - s_true / s_true.mean()
    assert np.abs(rel).mean() < 0.03 and np.percentile(np.abs(rel), 95) < 0.07
    assert np.ptp(est[0]) < 1e-5  # the DC term is grey by construction
    assert abs(float(rho @ intrinsic.LUMA) - intrinsic.SKIN_ALBEDO_LUMA) < 1e-5
    # the skin colour went to the albedo, not the light
    assert np.allclose(rho / rho.sum(), SKIN * light[0] / (SKIN * light[0]).sum(), atol=0.01)


def test_round_trip_albedo_times_shading_gives_back_the_image():
    img, n_dpr, labels, _, _, mask = scene()
    est, _ = intrinsic.estimate_input_light(img, n_dpr, labels)
    shading = intrinsic.shade_image(n_dpr, est, mask)
    albedo = intrinsic.estimate_albedo(img, shading, mask.astype(np.float32))
    err = (albedo * shading - img)[mask]
    psnr = 10 * np.log10(1.0 / np.mean(err ** 2))
    assert psnr > 45


def test_albedo_is_flat_where_the_light_is_flat_and_regularised_in_shadow():
    img, n_dpr, labels, _, albedo_true, mask = scene()
    est, rho = intrinsic.estimate_input_light(img, n_dpr, labels)
    shading = intrinsic.shade_image(n_dpr, est, mask)
    albedo = intrinsic.estimate_albedo(img, shading, mask.astype(np.float32))
    # up to the global colour/scale ambiguity the albedo pattern is recovered
    ratio = albedo[mask] / np.maximum(albedo_true[mask], 1e-6)
    assert np.percentile(np.std(ratio, axis=0) / np.mean(ratio, axis=0), 50) < 0.05
    assert np.isfinite(albedo).all() and albedo.max() <= 4.0
    # a zero-shading pixel gets a finite, smoothed albedo instead of a division blow-up
    shading2 = shading.copy()
    shading2[70:80, 70:80] = 0
    a2 = intrinsic.estimate_albedo(img, shading2, mask.astype(np.float32))
    assert np.isfinite(a2).all() and a2[75, 75].max() < 2.0


def test_skin_mask_excludes_highlights_and_dark_pixels():
    img, n_dpr, labels, _, _, _ = scene()
    img = img.copy()
    img[60:64, 60:64] = 1.0  # specular highlight
    img[100:104, 70:74] = 0.0  # deep shadow
    m = intrinsic.skin_sample_mask(img, labels, n_dpr)
    assert not m[60:64, 60:64].any() and not m[100:104, 70:74].any()
    assert m.sum() > 0.5 * labels.sum()


def test_no_skin_gives_none():
    img, n_dpr, labels, _, _, _ = scene(64)
    assert intrinsic.estimate_input_light(img, n_dpr, np.zeros_like(labels)) is None


def test_collapsed_channel_fit_is_replaced_not_divided_by():
    """A dim channel whose fitted DC collapsed must not blow the neutralised light up (it did: the blue
    light of a 128 px frame reached -5680); a healthy fit passes through unchanged."""
    from relight_core import sh as shlib

    rng = np.random.default_rng(3)
    n = rng.normal(size=(3000, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    n = n[n[:, 1] < -0.15]
    light = np.array([1.0, -0.4, 0.3, 0.5, 0.0, 0.0, -0.1, 0.05, 0.0])
    rgb = np.clip(shlib.shade(n, light), 0, None)[:, None] * np.array([0.6, 0.4, 0.08])
    good = intrinsic.fit_light(n, rgb)
    assert np.allclose(intrinsic.guard_channel_fits(good, n, rgb), good)
    broken = good.copy()
    broken[0, 2] = 1e-7
    fixed = intrinsic.guard_channel_fits(broken, n, rgb)
    assert fixed[0, 2] > 0.25 * good[0, 2]
    light_in, _ = intrinsic.neutralise_light(fixed)
    ref, _ = intrinsic.neutralise_light(good)
    assert np.abs(light_in).max() < 2.0 * np.abs(ref).max()


def test_dim_shading_fades_to_grey_of_the_same_luminance() -> None:
    """Extrapolated input shading (one channel clamped to 0 where the normals turn away) loses its colour
    where it is dim, keeps it where it is lit, and keeps its luminance everywhere."""
    s = np.full((4, 50, 3), 1.0, np.float32)
    s[0, :] = (1.2, 1.0, 0.7)  # a warm lit region: kept
    s[1, :10] = (0.08, 0.06, 0.0)  # dim and olive: one channel clamped
    s[2, :10] = 0.0
    before = s @ intrinsic.LUMA
    out = intrinsic.fade_dim_colour(s)
    assert out is s
    np.testing.assert_allclose(s @ intrinsic.LUMA, before, atol=1e-6)
    np.testing.assert_allclose(s[0, 0], (1.2, 1.0, 0.7), atol=1e-6)
    dim = s[1, 0]
    assert np.ptp(dim) < 0.25 * np.ptp([0.08, 0.06, 0.0])  # mostly grey now
    assert np.all(s[2, :10] == 0.0)
