"""Key lights on skin: visible normals, ambient SH, soft shadows, subsurface blur, specular."""

from __future__ import annotations

import math

import cv2
import numpy as np

from relight_core import geometry, lights, render, skin
from relight_core import sh as shlib

PLANE_Z = -3.0


def _height_field(h: np.ndarray, half: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A height field h (n, n) over [-half, half]^2 seen by an orthographic camera looking down -z ->
    (points (n*n, 3) at z = PLANE_Z + h, pixel x and y coordinates (n,))."""
    n = h.shape[0]
    xs = (np.arange(n) + 0.5) / n * 2 * half - half
    gx, gy = np.meshgrid(xs, -xs)
    pts = np.stack([gx, gy, PLANE_Z + h], -1).reshape(-1, 3).astype(np.float32)
    return pts, xs, -xs


def _nose(n: int, half: float = 0.5) -> tuple[np.ndarray, callable]:
    """A nose-like ridge: a Gaussian bump, long in y, on the plane -> (heights (n, n), height(x, y))."""
    def height(x, y):
        return 0.18 * np.exp(-0.5 * ((x / 0.05) ** 2 + (y / 0.12) ** 2))

    xs = (np.arange(n) + 0.5) / n * 2 * half - half
    gx, gy = np.meshgrid(xs, -xs)
    return height(gx, gy), height


def _ray_traced_shadow(points: np.ndarray, to_light: np.ndarray, height) -> np.ndarray:
    """Reference: a point is shadowed when the ray to the (directional) light passes below the height
    field anywhere (marched in half-pixel steps) -> (N,) bool."""
    shadow = np.zeros(len(points), bool)
    for t in np.arange(0.001, 0.2 / to_light[2], 0.002):  # above 0.2 nothing can block
        q = points + t * to_light[None, :]
        shadow |= (q[:, 2] - PLANE_Z) < height(q[:, 0], q[:, 1]) - 1e-6
    return shadow


def test_visible_normals_are_turned_toward_the_camera():
    """A pixel's normal that faces away from the camera (the interpolated mesh normal along the nose's
    underside) is turned until it faces it by MIN_FACING; normals that face it are left alone."""
    k = np.array([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]])
    xs = np.array([50.0, 50.0, 20.0]) - 0.5
    ys = np.array([50.0, 50.0, 70.0]) - 0.5
    n = np.array([[0.0, -0.995, -0.1], [0.0, -0.6, 0.8], [0.3, -0.9, 0.3]], np.float32)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    out = geometry.face_the_camera(n, xs, ys, k)
    t = np.stack([(k[0, 2] - 0.5 - xs) / k[0, 0], (ys + 0.5 - k[1, 2]) / k[1, 1], np.ones(3)], 1)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    cos = np.sum(out * t, axis=1)
    assert cos[0] > 0.05 and out[0, 1] < -0.9  # now facing the camera, still mostly downward
    np.testing.assert_allclose(out[1:], n[1:], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_ambient_sh_of_the_rembrandt_preset_is_its_fill():
    """Without its key, the rembrandt preset is its world fill: an even irradiance (no ringing below zero
    on the side turned away from the key, the black under the nose)."""
    seq = lights.load_lighting("rembrandt")
    rest = render.ambient_target_sh(seq.sh_at(0), seq.key_lights_at(0), np.eye(3))
    e = shlib.shade(shlib._fibonacci_sphere(500), rest) @ shlib.LUMA
    full = shlib.shade(shlib._fibonacci_sphere(500), seq.sh_at(0)) @ shlib.LUMA
    assert e.min() > 0 and (e.max() - e.min()) < 0.1 * e.mean()
    assert e.mean() < 0.2 * full.max()


def test_ambient_sh_leaves_a_target_that_does_not_hold_its_key():
    """A request whose SH is only a dim fill (its key not included, against the convention) keeps it."""
    fill = np.zeros((9, 3))
    fill[0] = 0.6
    key = lights.DirectionalLight(direction=(-0.6, -0.5, 0.6), strength=3.0)
    np.testing.assert_allclose(render.ambient_target_sh(fill, [key], np.eye(3)), fill)


def test_key_light_on_a_surface_facing_away_gets_the_fill_not_black():
    """Under a high key, a downward normal (the nose's underside) is lit by the fill only, as physics
    says, and its shading is that fill, not the clipped ringing of the key's SH."""
    seq = lights.load_lighting("rembrandt")
    sh_full, keys = seq.sh_at(0), seq.key_lights_at(0)
    rest = render.ambient_target_sh(sh_full, keys, np.eye(3))
    n = np.array([[[0.0, -0.95, 0.31]]], np.float32)  # cam space: down and a little toward the camera
    n /= np.linalg.norm(n)
    feats = np.array([[1, -n[0, 0, 2], n[0, 0, 1], n[0, 0, 0], 0, 0, 0, 0, 0]], np.float32)
    feats[0, 4:] = [feats[0, 3] * feats[0, 1], feats[0, 1] * feats[0, 2], feats[0, 2] ** 2,
                    feats[0, 3] * feats[0, 2], feats[0, 3] ** 2 - feats[0, 1] ** 2]
    from relight_core import intrinsic

    shading = intrinsic.shade_features(feats, [rest])[0].reshape(1, 1, 3)
    fill = shading.copy()
    pts = np.array([[[0.0, -0.1, -2.7]]], np.float32)
    labels = np.full((1, 1), geometry.SKIN, np.uint8)
    render.key_light_shading(shading, n, pts, np.ones((1, 1), bool), labels, keys, np.eye(3),
                             np.array([0, 0, -2.7]), np.zeros(3), 500.0)
    old = intrinsic.shade_features(feats, [sh_full])[0]
    assert shading.min() >= fill.min() > 0.5 * (shlib.shade(np.array([[0, 0, 1.0]]), rest) @ shlib.LUMA)[0]
    assert (old @ shlib.LUMA)[0] < 0.6 * (shading.reshape(3) @ shlib.LUMA)


def test_nose_shadow_matches_a_ray_traced_reference_within_a_pixel():
    size = 256
    h, height = _nose(size)
    pts, _, _ = _height_field(h)
    to_light = np.array([0.55, 0.35, 0.76])  # right, up, toward the camera (cam space)
    to_light /= np.linalg.norm(to_light)
    vis = skin.soft_shadow_visibility(pts, to_light[None, :], None, 0.0, res=size).reshape(size, size)
    ref = _ray_traced_shadow(pts, to_light, height).reshape(size, size)
    assert ref.sum() > 500  # a real shadow beside the ridge
    ours = vis < 0.5
    edge = np.minimum(cv2.distanceTransform(ref.astype(np.uint8), cv2.DIST_L2, 5),
                      cv2.distanceTransform((~ref).astype(np.uint8), cv2.DIST_L2, 5))
    wrong = ours != ref
    assert edge[wrong].max(initial=0.0) <= 1.0 + 1e-6  # every disagreement lies on the edge's pixel


def _penumbra_width(angular_radius: float, plate_height: float, size: int = 256) -> float:
    """10-90 % width (px) of the shadow edge cast on the plane by a square plate plate_height above it,
    light straight above tilted 20 deg in x."""
    xs = (np.arange(size) + 0.5) / size - 0.5
    gx, gy = np.meshgrid(xs, -xs)
    h = np.where((np.abs(gx) < 0.15) & (np.abs(gy) < 0.15), plate_height, 0.0)
    pts, _, _ = _height_field(h)
    a = math.radians(20)
    to_light = np.array([[math.sin(a), 0.0, math.cos(a)]])
    vis = skin.soft_shadow_visibility(pts, to_light, None, angular_radius, res=size).reshape(size, size)
    # the left edge of the shadow, on the plane (beyond the plate's left side, x < -0.15), middle row
    row = vis[size // 2]
    left = np.flatnonzero(xs < -0.15)
    prof = row[left]
    i10 = np.flatnonzero(prof < 0.9)[0]
    i90 = np.flatnonzero(prof < 0.1)[0]
    return float(i90 - i10)


def test_penumbra_widens_with_light_size_and_occluder_distance():
    small = _penumbra_width(0.02, 0.15)
    big = _penumbra_width(0.12, 0.15)
    far = _penumbra_width(0.12, 0.3)
    assert big > small + 3 and far > big + 3
    # PCSS's penumbra: 2 Delta tan(r) / cos(20 deg) on the plane (Delta along the light) -> px at 256 px
    expect = 2 * 0.3 * math.tan(0.12) * 256
    assert 0.5 * expect < far < 1.6 * expect


def test_subsurface_blur_keeps_flat_light_and_reddens_a_shadow_edge():
    h, w = 64, 96
    weight = np.zeros((h, w), np.float32)
    weight[8:56, 8:88] = 1.0
    flat = np.full((h, w, 3), 0.7, np.float32)
    np.testing.assert_allclose(skin.subsurface_blur(flat, weight, 2.0)[weight > 0], 0.7, atol=1e-5)
    edge = np.full((h, w, 3), 1.0, np.float32)
    edge[:, 48:] = 0.1  # a hard shadow from column 48 on
    out = skin.subsurface_blur(edge, weight, 2.0)
    dark = out[32, 49]  # just inside the shadow
    assert dark[0] > dark[1] > dark[2] > 0.1  # red spreads furthest into it
    np.testing.assert_allclose(out[32, 15], 1.0, atol=1e-3)  # far from the edge: unchanged
    np.testing.assert_allclose(out[2, 2], edge[2, 2])  # outside the skin: untouched


def test_skin_specular_is_a_fresnel_weighted_microfacet_lobe():
    n = np.array([[0.0, 0.0, 1.0]], np.float32)
    v = np.array([0.0, 0.0, 1.0], np.float32)
    head_on = skin.skin_specular(n, v, v)[0]
    # D(0) = 1 / (pi alpha^2), G = 1, F = F0: pi x sum w D F0 / 4
    expect = sum(w / (math.pi * r ** 4) for r, w in skin.SPEC_LOBES) * skin.SKIN_F0 * math.pi / 4
    assert abs(head_on - expect) < 1e-3 * expect
    # grazing: Fresnel rises toward 1 (the mirror direction at 80 deg)
    a = math.radians(80)
    lo = np.array([math.sin(a), 0.0, math.cos(a)], np.float32)
    vi = np.array([-math.sin(a), 0.0, math.cos(a)], np.float32)
    f_grazing = skin.skin_specular(n, lo, vi)[0] / math.cos(a)
    assert f_grazing > 3 * head_on
    assert skin.skin_specular(n, -lo, vi)[0] == 0.0  # light from below the surface
