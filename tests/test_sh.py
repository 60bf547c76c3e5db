"""relight_core.sh: basis convention, irradiance vs Monte-Carlo integrals, rotation, fitting, windowing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from relight_core import sh as S


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _uniform_sphere(rng: np.random.Generator, n: int) -> np.ndarray:
    return _unit(rng.normal(size=(n, 3)))


def test_basis_is_dprs_formula():
    """DPR's SH_basis written out independently (order 1, y, z, x, xy, yz, 3z^2-1, xz, x^2-y^2)."""
    rng = np.random.default_rng(0)
    n = _uniform_sphere(rng, 50)
    x, y, z = n.T
    att = np.pi * np.array([1, 2 / 3, 1 / 4])
    ref = np.stack([
        0.5 / np.sqrt(np.pi) * att[0] * np.ones_like(x),
        np.sqrt(3) / 2 / np.sqrt(np.pi) * y * att[1],
        np.sqrt(3) / 2 / np.sqrt(np.pi) * z * att[1],
        np.sqrt(3) / 2 / np.sqrt(np.pi) * x * att[1],
        np.sqrt(15) / 2 / np.sqrt(np.pi) * y * x * att[2],
        np.sqrt(15) / 2 / np.sqrt(np.pi) * y * z * att[2],
        np.sqrt(5) / 4 / np.sqrt(np.pi) * (3 * z * z - 1) * att[2],
        np.sqrt(15) / 2 / np.sqrt(np.pi) * x * z * att[2],
        np.sqrt(15) / 4 / np.sqrt(np.pi) * (x * x - y * y) * att[2],
    ], axis=1)
    assert np.allclose(S.sh_basis(n), ref, atol=1e-12)
    assert S.sh_basis(n.astype(np.float32)).dtype == np.float32


def test_ylm_orthonormal_by_quadrature():
    d = S._fibonacci_sphere(20000)
    y = S.sh_ylm(d)
    gram = y.T @ y * (4 * np.pi / len(d))
    assert np.allclose(gram, np.eye(9), atol=2e-3)


def test_shade_shapes():
    n = _unit(np.ones((4, 5, 3)))
    assert S.shade(n, np.ones(9)).shape == (4, 5)
    assert S.shade(n, np.ones((9, 3))).shape == (4, 5, 3)


def test_uniform_world_gives_pi_l():
    """Quadrature (Fibonacci lattice) projection of a uniform radiance L: shade() == pi L everywhere."""
    rng = np.random.default_rng(1)
    k = np.arange(100000) + 0.5
    z = 1 - 2 * k / len(k)
    phi = k * np.pi * (3 - np.sqrt(5))
    d = np.stack([np.sqrt(1 - z * z) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi), z], axis=1)
    radiance = np.array([0.5, 1.0, 2.0])
    coeffs = S.project_radiance(d, np.tile(radiance, (len(d), 1)), np.full(len(d), 4 * np.pi / len(d)))
    n = _uniform_sphere(rng, 100)
    e = S.shade(n, coeffs)
    assert np.allclose(e, np.pi * radiance[None, :], rtol=1e-4)


def test_irradiance_of_band_limited_radiance_matches_monte_carlo():
    """For a radiance of bands <= 2 the SH irradiance is exact: compare with a Monte-Carlo integral of
    L(w) max(0, n.w) over the sphere (independent of the A_l factors)."""
    rng = np.random.default_rng(2)
    a, b = _unit([0.3, -0.8, 0.5]), _unit([-0.6, 0.2, 0.7])

    def radiance(w):
        return 1.0 + 0.6 * (w @ a) + 0.4 * (w @ b) ** 2

    w = _uniform_sphere(rng, 400000)
    lw = radiance(w)
    coeffs = S.project_radiance(w, lw, np.full(len(w), 4 * np.pi / len(w)))
    n = _uniform_sphere(rng, 60)
    mc = (np.maximum(n @ w.T, 0) * lw[None, :]).mean(axis=1) * 4 * np.pi
    rel = np.abs(S.shade(n, coeffs) - mc) / mc
    assert rel.mean() < 0.01


def test_delta_light_is_band_limited_clamped_cosine():
    d = _unit([0.2, -0.5, 0.8])
    c = S.delta_sh(d, 2.0)
    n = _uniform_sphere(np.random.default_rng(3), 200)
    cos = n @ d
    expected = 2.0 * (0.25 + 0.5 * cos + 5 / 32 * (3 * cos ** 2 - 1))  # Legendre expansion, bands 0-2
    assert np.allclose(S.shade(n, c), expected, atol=1e-12)
    assert S.shade(d, c) == pytest.approx(2.0 * (0.25 + 0.5 + 5 / 16))


def test_cap_matches_monte_carlo_projection():
    """Uniform cap of half-angle 25 deg, perpendicular irradiance 1: closed form vs MC over the cap."""
    rng = np.random.default_rng(4)
    axis = _unit([0.4, -0.3, 0.6])
    half = math.radians(25)
    w = _uniform_sphere(rng, 400000)
    inside = (w @ axis) >= math.cos(half)
    radiance = 1.0 / (math.pi * math.sin(half) ** 2)
    k = int(inside.sum())
    mc = S.project_radiance(w[inside], np.full(k, radiance), np.full(k, 4 * np.pi / len(w)))
    assert np.allclose(S.cap_sh(axis, half, 1.0), mc, atol=4e-3)


def test_rotation_identity_and_group_properties():
    rng = np.random.default_rng(5)
    sh = rng.normal(size=(9, 3))
    n = _uniform_sphere(rng, 300)
    for _ in range(5):
        r = _random_rotation(rng)
        assert np.max(np.abs(S.shade(n, S.rotate_sh(sh, r)) - S.shade(n @ r, sh))) < 1e-6  # R^T n rows
        m = S.sh_rotation_matrix(r)
        assert np.allclose(m @ m.T, np.eye(9), atol=1e-10)
    r1, r2 = _random_rotation(rng), _random_rotation(rng)
    assert np.allclose(S.rotate_sh(S.rotate_sh(sh, r2), r1), S.rotate_sh(sh, r1 @ r2), atol=1e-10)
    assert np.allclose(S.rotate_sh(sh[:, 0], np.eye(3)), sh[:, 0], atol=1e-12)


def test_rotating_a_delta_light_moves_its_direction():
    d = _unit([0.1, -0.7, 0.4])
    rz = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 deg about +Z
    assert np.allclose(S.rotate_sh(S.delta_sh(d), rz), S.delta_sh(rz @ d), atol=1e-12)
    assert np.allclose(S.dominant_direction(S.delta_sh(rz @ d)), rz @ d)


def _half_sphere_samples(rng, n):
    w = _uniform_sphere(rng, n)
    w[:, 1] = -np.abs(w[:, 1])  # the camera-facing half (DPR Y < 0)
    return w


def test_fit_recovers_light_from_noisy_half_sphere_with_outliers():
    rng = np.random.default_rng(6)
    true = S.cap_sh(_unit([0.5, -0.6, 0.4]), 0.4, np.array([2.0, 1.8, 1.5]))
    true[0] += 2 * np.sqrt(np.pi) * np.array([0.3, 0.3, 0.35])
    n = _half_sphere_samples(rng, 4000)
    clean = S.shade(n, true)
    noisy = clean * (1 + 0.02 * rng.normal(size=clean.shape))
    bad = rng.random(len(n)) < 0.15  # shadows and speculars
    noisy[bad] *= rng.choice([0.2, 3.0], size=bad.sum())[:, None]
    robust = S.fit_sh(n, noisy, robust=True)
    plain = S.fit_sh(n, noisy, robust=False)
    test_n = _half_sphere_samples(rng, 500)
    ref = S.shade(test_n, true)
    err_robust = np.mean(np.abs(S.shade(test_n, robust) - ref)) / np.mean(ref)
    err_plain = np.mean(np.abs(S.shade(test_n, plain) - ref)) / np.mean(ref)
    assert err_robust < 0.03
    assert err_plain > 2 * err_robust
    exact = S.fit_sh(n, clean, robust=False)
    assert np.allclose(exact, true, atol=1e-6)  # noise-free data: the half sphere determines all 9
    grey = S.fit_sh(n, clean[:, 0], weights=np.ones(len(n)))
    assert grey.shape == (9,) and np.allclose(grey, true[:, 0], atol=1e-5)


def test_window_makes_a_hard_light_non_negative():
    d = _unit([0.0, -1.0, 0.2])
    n = S._fibonacci_sphere(5000)
    raw = S.shade(n, S.delta_sh(d))
    win = S.shade(n, S.window_sh(S.delta_sh(d)))
    assert raw.min() / raw.max() == pytest.approx(-0.0373, abs=5e-4)
    assert win.min() >= 0.0
    assert np.allclose(S.window_sh(np.ones((9, 3)))[0], 1.0)  # the mean is kept
    for kind in ("hann", "lanczos", "gauss", "none"):
        assert S.window_factors(kind, 3.0)[0] == 1.0
    with pytest.raises(ValueError):
        S.window_factors("box")


def test_sphere_normals_frame():
    n, mask = S.sphere_normals(32)
    assert mask[16, 16] and not mask[0, 0]
    assert n[16, 31, 0] > 0.9 and n[0, 16, 2] > 0.9  # right = +X, top = +Z
    assert np.all(n[mask][:, 1] <= 0)  # facing the viewer (-Y)
