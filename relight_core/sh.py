"""Second-order spherical harmonics (SH) lighting: basis, irradiance, rotation, fitting, windowing.

numpy only: this module is imported inside Blender too.

Convention (the project's, = DPR's). Nine real SH per colour channel in the order
`1, y, z, x, xy, yz, 3z^2-1, xz, x^2-y^2`, orthonormal on the sphere (Y_00 = 1 / (2 sqrt(pi)), ...).
A light is the vector of SH coefficients of its RADIANCE L(w) (W / (m^2 sr)):
`c_i = integral L(w) Y_i(w) dw`. The Lambertian convolution factors A_l = (pi, 2pi/3, pi/4) are folded
into the basis (`sh_basis`), so `shade(n, c) = sh_basis(n) @ c` is the IRRADIANCE E(n) (W / m^2) of a
surface with normal n: a uniform world of radiance L gives E = pi L (c_0 = 2 sqrt(pi) L), and a white
Lambertian surface then has radiance E / pi. DPR's light files are in exactly this form.

Directions and normals are unit vectors in the DPR frame: +X image right, +Z image up, +Y into the
screen (the viewer looks along +Y; normals facing the viewer have Y < 0).

A light array is `(9,)` (grey) or `(9, C)` (C channels, usually RGB).
"""

from __future__ import annotations

import math

import numpy as np

SH_NAMES = ("1", "y", "z", "x", "xy", "yz", "3z^2-1", "xz", "x^2-y^2")
BAND = np.array([0, 1, 1, 1, 2, 2, 2, 2, 2])
LAMBERT = np.array([math.pi, 2 * math.pi / 3, math.pi / 4])  # A_l, clamped-cosine convolution factors
ATTENUATION = LAMBERT[BAND]  # (9,) per coefficient

_C0 = 0.5 / math.sqrt(math.pi)
_C1 = math.sqrt(3.0) / 2 / math.sqrt(math.pi)
_C2 = math.sqrt(15.0) / 2 / math.sqrt(math.pi)
_C20 = math.sqrt(5.0) / 4 / math.sqrt(math.pi)
_C22 = math.sqrt(15.0) / 4 / math.sqrt(math.pi)


# --------------------------------------------------------------------------------------------- basis

def _float(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)


def sh_ylm(dirs: np.ndarray) -> np.ndarray:
    """Orthonormal real SH (no Lambertian factors) of unit directions (..., 3) -> (..., 9), DPR order."""
    d = _float(dirs)
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    return np.stack([
        np.full_like(x, _C0),
        _C1 * y, _C1 * z, _C1 * x,
        _C2 * x * y, _C2 * y * z, _C20 * (3 * z * z - 1), _C2 * x * z, _C22 * (x * x - y * y),
    ], axis=-1)


def sh_basis(normals: np.ndarray) -> np.ndarray:
    """Irradiance basis of unit normals (..., 3) -> (..., 9): `sh_ylm(n) * ATTENUATION` (DPR's basis).

    float32 input stays float32; anything else is computed in float64.
    """
    y = sh_ylm(normals)
    return y * ATTENUATION.astype(y.dtype)


def shade(normals: np.ndarray, sh: np.ndarray) -> np.ndarray:
    """Irradiance E (W/m^2) at unit normals (..., 3) under light `sh`: (9,) -> (...), (9, C) -> (..., C).

    Band-limited: under a single hard light it can dip slightly below zero on the far side (see
    `window_sh`); callers that need a physical value clamp at 0.
    """
    b = sh_basis(normals)
    return b @ np.asarray(sh, dtype=b.dtype)


def delta_sh(direction: np.ndarray, irradiance: float | np.ndarray = 1.0) -> np.ndarray:
    """SH of a delta light: direction (3,) toward the light, perpendicular irradiance E (scalar or (C,)).

    Returns (9,) or (9, C): E * Y(d). Its shading is the band-limited clamped cosine E max(0, n.d).
    """
    d = np.asarray(direction, dtype=np.float64)
    d = d / max(np.linalg.norm(d), 1e-300)
    y = sh_ylm(d)
    e = np.asarray(irradiance, dtype=np.float64)
    return y * e if e.ndim == 0 else y[:, None] * e[None, :]


def project_radiance(dirs: np.ndarray, radiance: np.ndarray, solid_angles: np.ndarray) -> np.ndarray:
    """Quadrature of a radiance distribution into SH coefficients.

    dirs (N, 3) unit directions, radiance (N,) or (N, C) W/(m^2 sr), solid_angles (N,) sr ->
    (9,) or (9, C): sum_i L_i Y(d_i) dw_i.
    """
    y = sh_ylm(np.asarray(dirs, dtype=np.float64)) * np.asarray(solid_angles, dtype=np.float64)[:, None]
    return y.T @ np.asarray(radiance, dtype=np.float64)


def cap_sh(direction: np.ndarray, half_angle: float, irradiance: float | np.ndarray = 1.0) -> np.ndarray:
    """SH of a uniform disc (spherical cap) of half-angle `half_angle` (rad) around `direction` (3,).

    `irradiance` (scalar or (C,)) is the perpendicular irradiance the whole cap gives (the cap's radiance
    is E / (pi sin^2 a)), as for Blender's sun with an angle and Cycles' sphere lights. Exact (zonal
    harmonics): band factors (2 / (1 + cos a), 1, cos a) times `delta_sh`. half_angle = 0 is a delta.
    Returns (9,) or (9, C).
    """
    a = float(np.clip(half_angle, 0.0, math.pi / 2))
    ca = math.cos(a)
    factors = np.array([2.0 / (1.0 + ca), 1.0, ca])[BAND]
    out = delta_sh(direction, irradiance)
    return out * (factors if out.ndim == 1 else factors[:, None])


# --------------------------------------------------------------------------------------------- rotation

def _fibonacci_sphere(n: int) -> np.ndarray:
    k = np.arange(n) + 0.5
    z = 1 - 2 * k / n
    r = np.sqrt(1 - z * z)
    phi = k * math.pi * (3 - math.sqrt(5))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


_ROT_DIRS = _fibonacci_sphere(32)
_ROT_PINV = np.linalg.pinv(sh_ylm(_ROT_DIRS))  # (9, 32)


def sh_rotation_matrix(rot: np.ndarray) -> np.ndarray:
    """(9, 9) matrix M with Y(R u) = M Y(u) for all u, for a 3x3 rotation R (block-diagonal by band).

    Solved exactly (to rounding) on a fixed set of 32 directions: band-limited functions are determined
    by their values there.
    """
    r = np.asarray(rot, dtype=np.float64)
    mt = _ROT_PINV @ sh_ylm(_ROT_DIRS @ r.T)  # (9, 9) = M^T
    m = mt.T
    m[BAND[:, None] != BAND[None, :]] = 0.0
    return m


def rotate_sh(sh: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Rotate a light: rot (3, 3) acts on directions; the rotated light is L'(w) = L(R^T w).

    sh (9,) or (9, C) -> same shape (float64). Then `shade(n, rotate_sh(sh, R)) == shade(R^T n, sh)`.
    """
    return sh_rotation_matrix(rot) @ np.asarray(sh, dtype=np.float64)


# --------------------------------------------------------------------------------------------- fitting

def fit_sh(normals: np.ndarray, values: np.ndarray, weights: np.ndarray | None = None,
           robust: bool = True, huber_k: float = 1.345, max_iter: int = 30) -> np.ndarray:
    """Least-squares SH light from observed irradiance-like values at unit normals.

    normals (N, 3) DPR frame; values (N,) or (N, C); weights (N,) >= 0 or None. Solves
    min sum w_i rho(|sh_basis(n_i) @ sh - v_i|) -> (9,) or (9, C) float64. robust=True uses iteratively
    reweighted least squares with Huber's loss (threshold `huber_k` x the MAD scale of the residuals;
    for C > 1 one weight per sample from the channel-RMS residual), so a few outliers (speculars,
    shadows, hair) barely move the fit; robust=False is plain (weighted) least squares.
    A tiny ridge (1e-9 of the mean diagonal) keeps a nearly degenerate normal set solvable.
    """
    a = sh_basis(np.asarray(normals, dtype=np.float64).reshape(-1, 3))
    v = np.asarray(values, dtype=np.float64)
    squeeze = v.ndim == 1
    v = v.reshape(len(a), -1)
    w0 = np.ones(len(a)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(a) != len(v) or len(w0) != len(a):
        raise ValueError(f"fit_sh: {len(a)} normals, {len(v)} values and {len(w0)} weights differ")

    def solve(w: np.ndarray) -> np.ndarray:
        aw = a * w[:, None]
        ata = a.T @ aw
        ata += np.eye(9) * (1e-9 * max(np.trace(ata) / 9, 1e-300))
        return np.linalg.solve(ata, aw.T @ v)

    sh = solve(w0)
    if robust:
        for _ in range(max_iter):
            r = np.sqrt(np.mean((a @ sh - v) ** 2, axis=1))
            scale = 1.4826 * np.median(r[w0 > 0]) if np.any(w0 > 0) else 0.0
            if scale <= 1e-12:
                break
            hub = np.minimum(1.0, huber_k * scale / np.maximum(r, 1e-300))
            new = solve(w0 * hub)
            done = np.max(np.abs(new - sh)) <= 1e-7 * max(np.max(np.abs(sh)), 1e-12)
            sh = new
            if done:
                break
    return sh[:, 0] if squeeze else sh


# --------------------------------------------------------------------------------------------- windowing

NONNEGATIVE_WIDTH = 2.3  # gauss width at which a windowed delta light's irradiance stays >= 0


def window_factors(kind: str = "gauss", width: float = NONNEGATIVE_WIDTH) -> np.ndarray:
    """Per-band window (3,) for bands 0..2.

    kind "gauss": exp(-l (l + 1) / (2 width^2)) (the SH heat kernel); "hann": (1 + cos(pi l / width)) / 2;
    "lanczos": sinc(l / width); "none": ones. A smaller width smooths more. See `window_sh`.
    """
    lv = np.arange(3, dtype=np.float64)
    if kind == "none":
        return np.ones(3)
    if width <= 0:
        raise ValueError("window width must be > 0")
    if kind == "gauss":
        return np.exp(-lv * (lv + 1) / (2.0 * width * width))
    if kind == "hann":
        return np.where(lv < width, 0.5 * (1 + np.cos(np.pi * np.minimum(lv / width, 1.0))), 0.0)
    if kind == "lanczos":
        return np.sinc(lv / width)
    raise ValueError(f"unknown SH window {kind!r}; use gauss, hann, lanczos or none")


def window_sh(sh: np.ndarray, kind: str = "gauss", width: float = NONNEGATIVE_WIDTH) -> np.ndarray:
    """Scale bands 1 and 2 of a light to tame ringing: sh (9,) or (9, C) -> same shape.

    Order-2 SH of a single hard light is a band-limited clamped cosine that dips to -3.7% of its peak
    irradiance 122 deg away from the light. The default Gaussian window (width 2.3: factors
    (1, 0.828, 0.567)) makes the windowed irradiance of ANY delta light >= 0 everywhere (min +0.04% of
    the peak), hence of any non-negative light, at the cost of a slightly softer terminator. Measured
    dips of a delta light for other windows: hann 4 -2.7%, lanczos 3 -4.3%, gauss 3 -1.2%.
    Band 0 (the mean irradiance) is never changed.
    """
    f = window_factors(kind, width)[BAND]
    sh = np.asarray(sh, dtype=np.float64)
    return sh * (f if sh.ndim == 1 else f[:, None])


# --------------------------------------------------------------------------------------------- helpers

LUMA = np.array([0.2126, 0.7152, 0.0722])


def to_rgb(sh: np.ndarray) -> np.ndarray:
    """(9,) grey -> (9, 3) (repeated); (9, 3) unchanged (float64)."""
    sh = np.asarray(sh, dtype=np.float64)
    return np.repeat(sh[:, None], 3, axis=1) if sh.ndim == 1 else sh


def to_grey(sh: np.ndarray) -> np.ndarray:
    """(9, 3) -> (9,) Rec.709 luminance; (9,) unchanged; (9, C != 3) -> mean over channels."""
    sh = np.asarray(sh, dtype=np.float64)
    if sh.ndim == 1:
        return sh
    return sh @ LUMA if sh.shape[1] == 3 else sh.mean(axis=1)


def dominant_direction(sh: np.ndarray) -> np.ndarray:
    """Unit direction (3,) (DPR frame) of the light's linear (band-1) part, i.e. where the irradiance
    gradient points; luminance of RGB. A light without a band-1 part returns +Z (up)."""
    g = to_grey(sh)
    v = np.array([g[3], g[1], g[2]])  # (x, y, z) from the (y, z, x) band-1 order
    n = np.linalg.norm(v)
    return v / n if n > 1e-12 else np.array([0.0, 0.0, 1.0])


def sphere_normals(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normals of a unit sphere seen by the DPR viewer (orthographic, looking along +Y), pixel centres.

    Returns (normals (size, size, 3) float64 DPR frame, zero outside; mask (size, size) bool). Row 0 is
    the top (+Z), column 0 the left (-X); visible normals have Y <= 0.
    """
    c = (np.arange(size) + 0.5) / size * 2 - 1
    x, z = np.meshgrid(c, -c)
    r2 = x * x + z * z
    mask = r2 <= 1.0
    y = -np.sqrt(np.clip(1 - r2, 0, None))
    n = np.stack([x, y, z], axis=-1) * mask[..., None]
    return n, mask
