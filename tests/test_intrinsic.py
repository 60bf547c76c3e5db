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


def test_skin_samples_exclude_highlights_and_dark_pixels():
    img, n_dpr, labels, _, _, _ = scene()
    img = img.copy()
    img[60:64, 60:64] = 1.0  # specular highlight
    img[100:104, 70:74] = 0.0  # deep shadow
    n, rgb = intrinsic.skin_samples(img, labels, n_dpr, max_samples=10 ** 6)
    assert len(rgb) > 0.5 * labels.sum()
    assert rgb.max() < 0.98 and (rgb @ intrinsic.LUMA).min() > 0.0
    assert (n[:, 1] < -0.15).all()


def test_no_skin_gives_none():
    img, n_dpr, labels, _, _, _ = scene(64)
    assert intrinsic.estimate_input_light(img, n_dpr, np.zeros_like(labels)) is None


def half_sphere_normals(seed: int = 3) -> np.ndarray:
    """Random unit normals (N, 3) DPR facing the camera (Y < -0.15), as a face shows them."""
    rng = np.random.default_rng(seed)
    n = rng.normal(size=(4000, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    return n[n[:, 1] < -0.15]


def light_colour(light: np.ndarray, direction) -> np.ndarray:
    """RGB irradiance of light (9, 3) from a DPR direction, divided by its luminance -> (3,)."""
    from relight_core import sh as shlib

    e = shlib.sh_basis(np.asarray(direction, dtype=np.float64)[None])[0] @ light
    return e / float(e @ intrinsic.LUMA)


def test_skin_paler_toward_the_camera_does_not_make_a_coloured_light():
    """A white light on skin whose colour drifts with the view angle (paler where it faces the camera, as
    sheen and subsurface scattering make it). Fitted channel by channel, the drift became a light bluer
    from the front (a white shirt in a real photo came back orange); tied, it stays near white."""
    from relight_core import sh as shlib

    n = half_sphere_normals()
    light = np.array([1.0, -0.6, 0.3, 0.2, 0.0, 0.0, -0.1, 0.0, 0.0])
    pale = np.clip(-n[:, 1], 0, 1)[:, None]  # 1 facing the camera, 0 side-on
    albedo = SKIN * (1 - 0.7 * pale) + np.array([0.9, 0.85, 0.8]) * 0.7 * pale
    rgb = np.clip(shlib.shade(n, light), 0, None)[:, None] * albedo

    def front_blue_over_red(tie: float) -> float:
        est, _ = intrinsic.neutralise_light(intrinsic.fit_light(n, rgb, colour_tie=tie))
        front = light_colour(est, [0, -1, 0])
        return float(front[2] / front[0])

    assert front_blue_over_red(0.0) > 1.4  # the failure this guards against
    assert front_blue_over_red(intrinsic.COLOUR_TIE) < 1.12


def test_a_light_coloured_by_direction_keeps_its_colour():
    """A warm key from the right and a cool fill from the left: the tie keeps the sense of the colour."""
    from relight_core import sh as shlib

    n = half_sphere_normals()
    warm = np.array([1.0, -0.3, 0.2, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0])
    cool = np.array([1.0, -0.3, 0.2, -0.6, 0.0, 0.0, 0.0, 0.0, 0.0])
    rgb = np.stack([shlib.shade(n, warm * c1 + cool * c2) for c1, c2 in ((0.7, 0.3), (0.5, 0.5), (0.3, 0.7))],
                   axis=1) * SKIN
    est, _ = intrinsic.neutralise_light(intrinsic.fit_light(n, rgb))
    right, left = light_colour(est, [0.8, -0.6, 0.0]), light_colour(est, [-0.8, -0.6, 0.0])
    assert right[0] / right[2] > 1.15 * left[0] / left[2]


def test_a_dim_channel_does_not_blow_the_light_up():
    """Blue at 8 % of red on warm skin (it reached -5680 in a 128 px frame when fitted on its own)."""
    from relight_core import sh as shlib

    n = half_sphere_normals()
    light = np.array([1.0, -0.4, 0.3, 0.5, 0.0, 0.0, -0.1, 0.05, 0.0])
    rng = np.random.default_rng(5)
    rgb = np.clip(shlib.shade(n, light), 0, None)[:, None] * np.array([0.6, 0.4, 0.048])
    rgb += rng.normal(scale=0.01, size=rgb.shape)
    est, _ = intrinsic.neutralise_light(intrinsic.fit_light(n, rgb))
    grey_fit = intrinsic.fit_light(n, (rgb @ intrinsic.LUMA)[:, None])
    grey, _ = intrinsic.neutralise_light(np.repeat(grey_fit, 3, axis=1))
    assert np.abs(est).max() < 2.0 * np.abs(grey).max()


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
