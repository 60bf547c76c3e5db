"""Light sources -> SH irradiance at a receiver; lighting presets and light files.

numpy only: this module is imported inside Blender too. Frames and SH convention: see `relight_core.sh`
(DPR frame: +X right, +Z up, +Y into the screen; SH = radiance coefficients, `shade()` = irradiance).

Units follow Blender (Cycles 4.x/5.x, checked against its source, scene/light.cpp and kernel/light):
- Sun (`DirectionalLight`): strength S in W/m^2 is the irradiance on a surface facing it; with an
  angular diameter `angle` the disc's radiance is S / (pi sin^2(angle/2)) (same total).
- Point and spot lights: power P (W) -> radiant intensity I = P / (4 pi) W/sr; the irradiance facing
  the light at distance d is I / d^2. With radius r > 0 Cycles makes a sphere light of radiance
  I / (pi r^2), seen as a uniform disc of half-angle asin(r / d): projected exactly (`sh.cap_sh`).
- Spot: the same intensity inside the cone (Blender does not renormalise power to the cone), times
  smoothstep((cos t - cos(size/2)) / ((1 - cos(size/2)) blend)) of the angle t off its axis.
- Area: a one-sided Lambertian emitter of radiance P / (pi A) (A = size * size_y, x pi/4 for disk and
  ellipse) shining along its local -Z; projected by Gauss-Legendre quadrature over its surface as seen
  from the receiver (exact at any distance up to the quadrature error).
- World colour x strength is radiance; an equirectangular environment map (H, W, 3) float radiance x
  strength uses Blender's mapping: column u = 0.5 - atan2(y, x) / 2pi (image centre = +X), row 0 = +Z.
- Colour multiplies power / strength. The light's own exposure is the caller's (x 2**exposure).

SH at a receiver ignores occlusion (a convex receiver such as a sphere is exact).

Presets and files: `Lighting` (one light + its explicit key lights), `LightSequence` (per frame),
`load_lighting(spec)` for a preset name or a .txt / .npy / .json file, `save_lighting`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from relight_core import sh as shlib
from relight_core.errors import UserError

FORMAT = "portrait-relight-lighting"
VERSION = 1
BLENDER_EQUIRECT_TO_MAP = np.eye(3)  # our map frame IS Blender's equirect frame (see module docstring)


def _vec3(v: Any) -> np.ndarray:
    return np.asarray(v, dtype=np.float64).reshape(3)


def _unit(v: Any) -> np.ndarray:
    v = _vec3(v)
    n = np.linalg.norm(v)
    if n <= 0:
        raise ValueError("a light direction must not be the zero vector")
    return v / n


def _color(c: Any) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64).reshape(-1)
    return np.repeat(c, 3) if c.size == 1 else c[:3]


# --------------------------------------------------------------------------------------------- lights

@dataclass
class DirectionalLight:
    """Blender sun. direction (3,): from the surface TO the light, DPR frame; color (3,) linear RGB;
    strength: irradiance W/m^2 on a surface facing it; angle: angular diameter (rad), 0 = hard."""

    direction: Any
    color: Any = (1.0, 1.0, 1.0)
    strength: float = 1.0
    angle: float = 0.0

    def sh(self, receiver: Any = (0.0, 0.0, 0.0)) -> np.ndarray:
        """(9, 3) irradiance SH (the receiver does not matter for a sun)."""
        e = _color(self.color) * float(self.strength)
        return shlib.cap_sh(_unit(self.direction), 0.5 * float(self.angle), e)

    def to_dict(self) -> dict:
        return {"type": "directional", "direction": _unit(self.direction).tolist(),
                "color": _color(self.color).tolist(), "strength": float(self.strength),
                "angle": float(self.angle)}


@dataclass
class PointLight:
    """Blender point light. position (3,) DPR frame (metres, or head units for key lights); power W;
    radius: sphere radius (Blender's `shadow_soft_size`), 0 = a true point."""

    position: Any
    color: Any = (1.0, 1.0, 1.0)
    power: float = 100.0
    radius: float = 0.0

    def intensity(self) -> np.ndarray:
        """Radiant intensity (3,) W/sr: colour x P / (4 pi)."""
        return _color(self.color) * float(self.power) / (4 * math.pi)

    def sh(self, receiver: Any = (0.0, 0.0, 0.0)) -> np.ndarray:
        """(9, 3) irradiance SH at `receiver` (3,)."""
        return _sphere_light_sh(_vec3(self.position), float(self.radius), self.intensity(), _vec3(receiver))

    def to_dict(self) -> dict:
        return {"type": "point", "position": _vec3(self.position).tolist(),
                "color": _color(self.color).tolist(), "power": float(self.power),
                "radius": float(self.radius)}


@dataclass
class SpotLight:
    """Blender spot light. direction (3,): the cone axis, pointing AWAY from the light (its local -Z);
    spot_size: full cone angle (rad); spot_blend 0..1; other fields as `PointLight`."""

    position: Any
    direction: Any = (0.0, 0.0, -1.0)
    color: Any = (1.0, 1.0, 1.0)
    power: float = 100.0
    spot_size: float = math.radians(45.0)
    spot_blend: float = 0.15
    radius: float = 0.0

    def attenuation(self, receiver: Any) -> float:
        """Cone factor 0..1 for a receiver (3,) (Cycles' smoothstep on the cosine)."""
        to_rcv = _vec3(receiver) - _vec3(self.position)
        d = np.linalg.norm(to_rcv)
        if d <= 0:
            return 1.0
        cos_t = float(np.dot(to_rcv / d, _unit(self.direction)))
        cos_half = math.cos(0.5 * float(self.spot_size))
        if cos_t <= cos_half:
            return 0.0
        width = (1.0 - cos_half) * float(self.spot_blend)
        if width <= 0:
            return 1.0
        t = min((cos_t - cos_half) / width, 1.0)
        return t * t * (3 - 2 * t)

    def sh(self, receiver: Any = (0.0, 0.0, 0.0)) -> np.ndarray:
        """(9, 3) irradiance SH at `receiver` (3,)."""
        att = self.attenuation(receiver)
        if att <= 0:
            return np.zeros((9, 3))
        i = _color(self.color) * float(self.power) / (4 * math.pi) * att
        return _sphere_light_sh(_vec3(self.position), float(self.radius), i, _vec3(receiver))

    def to_dict(self) -> dict:
        return {"type": "spot", "position": _vec3(self.position).tolist(),
                "direction": _unit(self.direction).tolist(), "color": _color(self.color).tolist(),
                "power": float(self.power), "spot_size": float(self.spot_size),
                "spot_blend": float(self.spot_blend), "radius": float(self.radius)}


AREA_SHAPES = ("SQUARE", "RECTANGLE", "DISK", "ELLIPSE")


@dataclass
class AreaLight:
    """Blender area light. position (3,); rotation (3, 3): columns = its local X, Y, Z axes in the DPR
    frame (it emits along local -Z, one-sided); shape SQUARE | RECTANGLE | DISK | ELLIPSE; size along
    local X, size_y along local Y (SQUARE / DISK use size for both); power W (normalised: radiance
    P / (pi A))."""

    position: Any
    rotation: Any = field(default_factory=lambda: np.eye(3))
    shape: str = "SQUARE"
    size: float = 1.0
    size_y: float = 1.0
    color: Any = (1.0, 1.0, 1.0)
    power: float = 100.0

    def extent(self) -> tuple[float, float]:
        """(size_x, size_y) in the light's plane."""
        shape = str(self.shape).upper()
        if shape not in AREA_SHAPES:
            raise ValueError(f"unknown area light shape {self.shape!r}; use one of {AREA_SHAPES}")
        sx = float(self.size)
        sy = sx if shape in ("SQUARE", "DISK") else float(self.size_y)
        return sx, sy

    def area(self) -> float:
        sx, sy = self.extent()
        return sx * sy * (math.pi / 4 if str(self.shape).upper() in ("DISK", "ELLIPSE") else 1.0)

    def radiance(self) -> np.ndarray:
        """(3,) W/(m^2 sr): colour x P / (pi A)."""
        return _color(self.color) * float(self.power) / (math.pi * max(self.area(), 1e-300))

    def samples(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Gauss-Legendre points on the emitter (M, 3) and their areas (M,) (n per axis)."""
        sx, sy = self.extent()
        g, gw = np.polynomial.legendre.leggauss(n)
        if str(self.shape).upper() in ("DISK", "ELLIPSE"):
            r = 0.5 * (g + 1)  # radius 0..1, weight r dr
            wr = 0.5 * gw * r
            th = (np.arange(2 * n) + 0.5) * (2 * math.pi / (2 * n))
            rr, tt = np.meshgrid(r, th, indexing="ij")
            u = 0.5 * sx * rr * np.cos(tt)
            v = 0.5 * sy * rr * np.sin(tt)
            da = (wr[:, None] * np.full(th.shape, 2 * math.pi / (2 * n))[None, :]) * (0.25 * sx * sy)
        else:
            u1, v1 = 0.5 * sx * g, 0.5 * sy * g
            u, v = np.meshgrid(u1, v1, indexing="ij")
            da = np.outer(gw, gw) * (0.25 * sx * sy)
        rot = np.asarray(self.rotation, dtype=np.float64).reshape(3, 3)
        local = np.stack([u.ravel(), v.ravel(), np.zeros(u.size)], axis=1)
        return _vec3(self.position)[None, :] + local @ rot.T, da.ravel()

    def sh(self, receiver: Any = (0.0, 0.0, 0.0), n: int | None = None) -> np.ndarray:
        """(9, 3) irradiance SH at `receiver` (3,), quadrature over the emitter's solid angle.

        n: nodes per axis (default grows with the light's angular size, 12..64).
        """
        rcv = _vec3(receiver)
        rot = np.asarray(self.rotation, dtype=np.float64).reshape(3, 3)
        normal = -rot[:, 2] / max(np.linalg.norm(rot[:, 2]), 1e-300)  # emission direction
        d_centre = max(np.linalg.norm(_vec3(self.position) - rcv), 1e-9)
        if n is None:
            n = int(np.clip(12 + 16 * max(self.extent()) / d_centre, 12, 64))
        pts, da = self.samples(n)
        w = pts - rcv[None, :]
        dist = np.maximum(np.linalg.norm(w, axis=1), 1e-12)
        dirs = w / dist[:, None]
        cos_l = np.maximum(-(dirs @ normal), 0.0)  # one-sided: the receiver must be in front
        d_omega = da * cos_l / dist ** 2
        return np.outer(shlib.project_radiance(dirs, np.ones(len(dirs)), d_omega), self.radiance())

    def to_dict(self) -> dict:
        return {"type": "area", "position": _vec3(self.position).tolist(),
                "rotation": np.asarray(self.rotation, dtype=np.float64).reshape(3, 3).tolist(),
                "shape": str(self.shape).upper(), "size": float(self.size), "size_y": float(self.size_y),
                "color": _color(self.color).tolist(), "power": float(self.power)}


@dataclass
class WorldColor:
    """Uniform world: radiance = color x strength (Blender's Background colour and strength)."""

    color: Any = (0.05, 0.05, 0.05)
    strength: float = 1.0

    def sh(self, receiver: Any = (0.0, 0.0, 0.0)) -> np.ndarray:
        """(9, 3): only c_0 = 2 sqrt(pi) L, so that the irradiance is pi L everywhere."""
        out = np.zeros((9, 3))
        out[0] = 2 * math.sqrt(math.pi) * _color(self.color) * float(self.strength)
        return out

    def to_dict(self) -> dict:
        return {"type": "world", "color": _color(self.color).tolist(), "strength": float(self.strength)}


@dataclass
class EnvironmentMap:
    """Equirectangular radiance map. pixels (H, W, 3) float linear (W/(m^2 sr) x strength) in Blender's
    equirect frame (row 0 = +Z up, the centre column = +X, u = 0.5 - atan2(y, x) / 2pi); rotation (3, 3)
    takes map-frame directions to the DPR frame (radiance at DPR direction w is pixels(R^T w))."""

    pixels: Any
    strength: float = 1.0
    rotation: Any = field(default_factory=lambda: np.eye(3))

    def sh_map_frame(self) -> np.ndarray:
        """(9, 3) radiance SH in the map frame, exact for piecewise-constant pixels (the polar and
        azimuthal integrals of each pixel are done in closed form, separably)."""
        img = np.asarray(self.pixels, dtype=np.float64)
        if img.ndim != 3 or img.shape[2] < 3 or min(img.shape[:2]) < 1:
            raise ValueError(f"environment map must be (H, W, 3), got {img.shape}")
        img = img[..., :3]
        h, w = img.shape[:2]
        t = np.cos(np.linspace(0.0, math.pi, h + 1))  # cos(theta) at the row edges, top (+1) first
        st = np.sqrt(np.clip(1 - t * t, 0, None))

        def rows(prim: np.ndarray) -> np.ndarray:  # integral over each row of f(t) dt (t decreasing)
            return (prim[:-1] - prim[1:])[:, None, None]

        r_one, r_t, r_p2 = rows(t), rows(0.5 * t * t), rows(t ** 3 - t)
        r_s = rows(0.5 * (t * st + np.arcsin(np.clip(t, -1, 1))))
        r_st, r_ss = rows(-(st ** 3) / 3), rows(t - t ** 3 / 3)
        dphi = 2 * math.pi / w
        phi = math.pi * (1.0 - 2.0 * (np.arange(w) + 0.5) / w)  # atan2(y, x) at the column centres
        s1, s2 = np.sinc(dphi / (2 * math.pi)), np.sinc(2 * dphi / (2 * math.pi))  # pixel averages
        f = np.stack([np.ones(w), s1 * np.cos(phi), s1 * np.sin(phi), s2 * np.cos(2 * phi),
                      s2 * np.sin(2 * phi)], axis=1) * dphi
        s = np.einsum("hwc,wk->hkc", img, f)  # (H, 5, 3)
        c0, c1, c2, c20, c22 = shlib._C0, shlib._C1, shlib._C2, shlib._C20, shlib._C22
        out = np.stack([
            c0 * (r_one[:, 0] * s[:, 0]).sum(0),
            c1 * (r_s[:, 0] * s[:, 2]).sum(0),
            c1 * (r_t[:, 0] * s[:, 0]).sum(0),
            c1 * (r_s[:, 0] * s[:, 1]).sum(0),
            0.5 * c2 * (r_ss[:, 0] * s[:, 4]).sum(0),
            c2 * (r_st[:, 0] * s[:, 2]).sum(0),
            c20 * (r_p2[:, 0] * s[:, 0]).sum(0),
            c2 * (r_st[:, 0] * s[:, 1]).sum(0),
            c22 * (r_ss[:, 0] * s[:, 3]).sum(0),
        ])
        return out * float(self.strength)

    def sh(self, receiver: Any = (0.0, 0.0, 0.0)) -> np.ndarray:
        """(9, 3) irradiance SH in the DPR frame (environment maps are infinitely far)."""
        return shlib.rotate_sh(self.sh_map_frame(), np.asarray(self.rotation, dtype=np.float64))

    def to_dict(self) -> dict:
        return {"type": "environment", "shape": list(np.asarray(self.pixels).shape),
                "strength": float(self.strength)}


def _sphere_light_sh(position: np.ndarray, radius: float, intensity: np.ndarray,
                     receiver: np.ndarray) -> np.ndarray:
    """A (sphere) light of intensity (3,) W/sr at `position`, seen from `receiver` -> (9, 3)."""
    w = position - receiver
    d = float(np.linalg.norm(w))
    if radius > 0 and d <= radius:  # inside a sphere light: its surface surrounds the receiver
        out = np.zeros((9, 3))
        out[0] = 2 * math.sqrt(math.pi) * intensity / (math.pi * radius * radius)
        return out
    if d <= 0:
        raise ValueError("the receiver is at the point light's position")
    e = intensity / (d * d)
    half = math.asin(min(radius / d, 1.0)) if radius > 0 else 0.0
    return shlib.cap_sh(w / d, half, e)


def sh_from_lights(lights: Iterable, receiver: Any = (0.0, 0.0, 0.0),
                   window: str | tuple[str, float] | None = None) -> np.ndarray:
    """Sum of the lights' irradiance SH at `receiver` (3,) (DPR frame) -> (9, 3) float64.

    window: None (exact), a kind for `sh.window_sh` ("gauss", "hann", ...) or (kind, width).
    """
    total = np.zeros((9, 3))
    for light in lights:
        total += np.asarray(light.sh(receiver), dtype=np.float64).reshape(9, 3)
    if window:
        kind, width = (window, shlib.NONNEGATIVE_WIDTH) if isinstance(window, str) else window
        total = shlib.window_sh(total, kind, float(width))
    return total


def light_from_dict(d: dict) -> Any:
    """A light dict (as written by `to_dict`, or the worker's key-light dicts) -> a light object."""
    kind = str(d.get("type", "directional")).lower()
    color = d.get("color", (1.0, 1.0, 1.0))
    if kind in ("directional", "sun"):
        return DirectionalLight(direction=_unit(d["direction"]), color=_color(color),
                                strength=float(d.get("strength", 1.0)), angle=float(d.get("angle", 0.0)))
    if kind == "point":
        return PointLight(position=_vec3(d["position"]), color=_color(color),
                          power=float(d.get("power", 100.0)), radius=float(d.get("radius", 0.0)))
    if kind == "spot":
        return SpotLight(position=_vec3(d["position"]), direction=_unit(d["direction"]), color=_color(color),
                         power=float(d.get("power", 100.0)),
                         spot_size=float(d.get("spot_size", math.radians(45))),
                         spot_blend=float(d.get("spot_blend", 0.15)), radius=float(d.get("radius", 0.0)))
    if kind == "area":
        return AreaLight(position=_vec3(d["position"]),
                         rotation=np.asarray(d.get("rotation", np.eye(3)), dtype=np.float64).reshape(3, 3),
                         shape=str(d.get("shape", "SQUARE")), size=float(d.get("size", 1.0)),
                         size_y=float(d.get("size_y", d.get("size", 1.0))), color=_color(color),
                         power=float(d.get("power", 100.0)))
    if kind == "world":
        return WorldColor(color=_color(color), strength=float(d.get("strength", 1.0)))
    raise ValueError(f"unknown light type {kind!r}")


def key_lights_from_dicts(items: Any, where: str) -> list:
    """A JSON list of key-light dicts (`light_from_dict`) -> light objects; UserError naming `where` and the
    light's index when one is malformed, not finite or overflowing (`validate.MAX_LIGHT_POWER`)."""
    from relight_core import validate

    if items is None:
        return []
    if not isinstance(items, list):
        raise UserError(f"{where}: \"key_lights\" must be a list of light objects.")
    out = []
    for i, item in enumerate(items):
        what = f"{where}: key light {i}"
        if not isinstance(item, dict):
            raise UserError(f"{what} must be an object with \"type\" and its fields.")
        for name, value in item.items():
            if name not in ("type", "shape", "name"):
                validate.finite_array(value, f"{what} \"{name}\"", validate.MAX_LIGHT_POWER)
        try:
            out.append(light_from_dict(item))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UserError(f"{what} is malformed; give type 'directional' (direction, color, strength), "
                            "'point' (position, color, power), 'spot', 'area' or 'world'.") from None
    return out


def look_rotation(position: Any, target: Any = (0.0, 0.0, 0.0), up: Any = (0.0, 0.0, 1.0)) -> np.ndarray:
    """(3, 3) rotation (columns: local X, Y, Z) of a light at `position` whose local -Z points at
    `target` (for `AreaLight.rotation`, as Blender's Track To constraint)."""
    z = _vec3(position) - _vec3(target)
    z /= np.linalg.norm(z)
    upv = _vec3(up)
    if abs(float(np.dot(upv, z))) > 0.999:
        upv = np.array([0.0, 1.0, 0.0])
    x = np.cross(upv, z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], axis=1)


# --------------------------------------------------------------------------------------------- lighting

KEY_LIGHT_TYPES = (DirectionalLight, PointLight)


@dataclass
class Lighting:
    """One light: name, description, sh (9, 3) irradiance SH (DPR frame) INCLUDING the key lights'
    diffuse part, key_lights (DirectionalLight / PointLight) carried for specular highlights and cast
    shadows (which SH cannot represent; do not add their diffuse light again), and intensity: a scale
    applied to both by `effective_sh()` / `effective_key_lights()` (a preset's exposure)."""

    name: str = "custom"
    description: str = ""
    sh: Any = field(default_factory=lambda: np.zeros((9, 3)))
    key_lights: list = field(default_factory=list)
    intensity: float = 1.0

    def __post_init__(self) -> None:
        self.sh = shlib.to_rgb(np.asarray(self.sh, dtype=np.float64)).reshape(9, 3)

    def effective_sh(self) -> np.ndarray:
        """(9, 3) = sh x intensity."""
        return self.sh * float(self.intensity)

    def effective_key_lights(self) -> list:
        """Copies of the key lights with strength / power x intensity."""
        return [_scaled(k, float(self.intensity)) for k in self.key_lights]

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "name": self.name, "description": self.description,
                "sh": np.round(self.sh, 8).tolist(),
                "key_lights": [k.to_dict() for k in self.key_lights], "intensity": float(self.intensity)}


def _scaled(light: Any, k: float) -> Any:
    if k == 1.0:
        return light
    d = light.to_dict()
    for f in ("strength", "power"):
        if f in d:
            d[f] *= k
    return light_from_dict(d)


class LightSequence:
    """Lighting per frame. `n_frames` is 1 for a constant light; frames past the end hold the last light
    (and negative frames the first). `sh_at(frame)` -> (9, 3) effective SH (x intensity);
    `key_lights_at(frame)` -> list of key lights (x intensity); `lighting_at(frame)` -> `Lighting`."""

    def __init__(self, lightings: Lighting | Sequence[Lighting], name: str | None = None) -> None:
        self.lightings = [lightings] if isinstance(lightings, Lighting) else list(lightings)
        if not self.lightings:
            raise ValueError("a LightSequence needs at least one Lighting")
        self.name = name or self.lightings[0].name
        self._sh = np.stack([lt.effective_sh() for lt in self.lightings])

    @classmethod
    def from_sh(cls, shs: np.ndarray, name: str = "custom", description: str = "",
                intensity: float = 1.0) -> LightSequence:
        """From SH (9,), (9, 3), (N, 9) or (N, 9, 3)."""
        a = np.asarray(shs, dtype=np.float64)
        if a.ndim == 1 or (a.ndim == 2 and a.shape == (9, 3)):
            a = a[None]
        return cls([Lighting(name=name, description=description, sh=s, intensity=intensity) for s in a], name)

    @property
    def n_frames(self) -> int:
        return len(self.lightings)

    def _index(self, frame: int) -> int:
        return min(max(int(frame), 0), self.n_frames - 1)

    def lighting_at(self, frame: int) -> Lighting:
        return self.lightings[self._index(frame)]

    def sh_at(self, frame: int) -> np.ndarray:
        return self._sh[self._index(frame)].copy()

    def key_lights_at(self, frame: int) -> list:
        return self.lighting_at(frame).effective_key_lights()

    @property
    def description(self) -> str:
        return self.lightings[0].description


# --------------------------------------------------------------------------------------------- files

def presets_dir() -> Path:
    """The lighting presets folder: $RELIGHT_PRESETS/lighting if set, else <repo>/presets/lighting."""
    env = os.environ.get("RELIGHT_PRESETS")
    base = Path(env) if env else Path(__file__).resolve().parents[1] / "presets"
    return base / "lighting"


def list_presets() -> list[str]:
    """Names of the lighting presets (sorted)."""
    d = presets_dir()
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


def _check_finite(arr: np.ndarray, path: Path) -> None:
    """UserError when the SH coefficients are not finite or so large that the shading overflows."""
    from relight_core import validate

    validate.sh_coefficients(arr, f"Light file {path}")


def _sh_array(arr: np.ndarray, path: Path) -> np.ndarray:
    """Accepted shapes -> (N, 9, 3)."""
    _check_finite(arr, path)
    if arr.shape == (9,) or arr.shape == (1, 9):
        return np.repeat(arr.reshape(1, 9, 1), 3, axis=2)
    if arr.shape == (9, 3):
        return arr[None]
    if arr.ndim == 2 and arr.shape[1] == 9 and arr.shape[0] > 0:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[1:] == (9, 3) and arr.shape[0] > 0:
        return arr
    raise UserError(f"Light file {path} holds an array of shape {arr.shape}; expected 9 SH coefficients: "
                    "(9,), (1, 9), (N, 9) for one light per frame, or (9, 3) / (N, 9, 3) for RGB.")


def _read_txt(path: Path) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"Light file {path} is not a text file; give 9 numbers (one or 9 lines).") from None
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].replace(",", " ").strip()
        if not line:
            continue
        try:
            rows.append([float(t) for t in line.split()])
        except ValueError:  # never quote the line: a misnamed file may hold anything
            raise UserError(f"Light file {path} line {i} is not numbers; give 9 SH coefficients.") from None
    counts = {len(r) for r in rows}
    flat = np.array([v for r in rows for v in r], dtype=np.float64)
    if counts == {1} or (len(rows) == 1 and flat.size == 9):
        arr = flat  # 9 lines of 1, or 1 line of 9
    elif counts == {9}:
        arr = flat.reshape(-1, 9)  # one light per line
    elif counts == {3} and len(rows) == 9:
        arr = flat.reshape(9, 3)
    else:
        raise UserError(f"Light file {path} has {flat.size} numbers in {len(rows)} lines; give 9 SH "
                        "coefficients (one line or nine lines), or one line of 9 per frame.")
    if arr.ndim == 1 and arr.size != 9:
        raise UserError(f"Light file {path} has {arr.size} numbers; an SH light has 9.")
    return arr


def _read_json(path: Path) -> list[Lighting]:
    from relight_core import validate

    data = validate.read_json_file(path, "Light file")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"Light file {path} is not a Portrait Relight lighting file "
                        f"(\"format\": \"{FORMAT}\" is missing).")
    if data.get("version") != VERSION:
        raise UserError(f"Light file {path} has version {data.get('version')!r}; this version of Portrait "
                        f"Relight reads version {VERSION}.")
    if "sh" not in data:
        raise UserError(f"Light file {path} has no \"sh\" field; give 9 [r, g, b] triples.")
    try:
        arr = np.asarray(data["sh"], dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"Light file {path}: \"sh\" is not a list of numbers.") from None
    shs = _sh_array(arr, path)
    intensity = validate.finite_number(data.get("intensity", 1.0), f"Light file {path}: \"intensity\"",
                                       0.0, validate.MAX_SH)
    keys = _key_lights_per_frame(data.get("key_lights", []) or [], len(shs), path)
    validate.sh_coefficients(shs * intensity, f"Light file {path}: \"sh\" x \"intensity\"")
    name = str(data.get("name") or path.stem)
    desc = str(data.get("description", ""))
    n = max(len(shs), len(keys))
    return [Lighting(name=name, description=desc, sh=shs[min(f, len(shs) - 1)],
                     key_lights=keys[min(f, len(keys) - 1)], intensity=intensity) for f in range(n)]


def _key_lights_per_frame(items: list, n_sh: int, path: Path) -> list[list]:
    """A light file's "key_lights": one list for every frame, or one list per frame (an animated key
    light) -> one list of key lights per frame (at least `n_sh` entries unless per-frame)."""
    if not isinstance(items, list):
        raise UserError(f"Light file {path}: \"key_lights\" must be a list of light objects.")
    if items and all(isinstance(k, list) for k in items):
        if n_sh > 1 and len(items) != n_sh:
            raise UserError(f"Light file {path} has {n_sh} SH frames but {len(items)} frames of key lights; "
                            "give one list of key lights per frame, or one list for all frames.")
        return [key_lights_from_dicts(frame, f"Light file {path} frame {f}") for f, frame in enumerate(items)]
    return [key_lights_from_dicts(items, f"Light file {path}")] * n_sh


def read_lighting_file(path: str | os.PathLike) -> LightSequence:
    """A .txt (DPR), .npy or .json light file -> LightSequence. Coefficients load unchanged: DPR's own
    demo multiplies its example files by 0.7 at use; this loader does not (set an intensity if needed)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"Light file {p} does not exist.")
    suffix = p.suffix.lower()
    if suffix == ".json":
        return LightSequence(_read_json(p), name=p.stem)
    if suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            raise UserError(f"Light file {p} is not a readable .npy array.") from None
        arr = np.asarray(arr, dtype=np.float64) if arr.dtype.kind in "fiu" else None
        if arr is None:
            raise UserError(f"Light file {p} does not hold numbers.")
    elif suffix in (".txt", ".sh", ""):
        arr = _read_txt(p)
    else:
        raise UserError(f"Light file {p} has an unknown type {suffix!r}; use .txt, .npy or .json.")
    return LightSequence.from_sh(_sh_array(arr, p), name=p.stem)


PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def load_preset(name: str) -> LightSequence:
    """A lighting preset by name -> LightSequence; UserError when the name is not a plain preset name
    (no folders: it cannot leave the presets folder) or no such preset is installed."""
    s = str(name)
    if not PRESET_NAME.fullmatch(s) or ".." in s:
        raise UserError(f"Preset name {s!r} is not a plain name; choose one of "
                        f"{', '.join(list_presets()) or 'the installed presets'}.")
    preset = presets_dir() / f"{s}.json"
    if not preset.is_file():
        raise UserError(f"Lighting preset '{s}' does not exist; choose one of "
                        f"{', '.join(list_presets()) or 'none installed'}.")
    return read_lighting_file(preset)


def load_lighting(spec: str | os.PathLike) -> LightSequence:
    """A preset name or a light file path -> LightSequence (raises UserError with the reason)."""
    s = str(spec)
    p = Path(s)
    if p.is_file():
        return read_lighting_file(p)
    if p.suffix.lower() in (".txt", ".npy", ".json") or os.sep in s or "/" in s:
        raise UserError(f"Light file {s} does not exist.")
    if PRESET_NAME.fullmatch(s) and (presets_dir() / f"{s}.json").is_file():
        return load_preset(s)
    names = ", ".join(list_presets()) or "none installed"
    raise UserError(f"Lighting '{s}' is neither a preset ({names}) nor an existing light file.")


def save_lighting(path: str | os.PathLike, lighting: Lighting | LightSequence,
                  extra: dict | None = None) -> None:
    """Write a Lighting (or a LightSequence: "sh" becomes (N, 9, 3)) as JSON, atomically.

    extra: more top-level fields (e.g. the physical lights a preset was made from); readers ignore them.
    """
    if isinstance(lighting, LightSequence):
        first = lighting.lightings[0]
        data = first.to_dict()
        if lighting.n_frames > 1:
            data["sh"] = np.round(np.stack([lt.sh for lt in lighting.lightings]), 8).tolist()
    else:
        data = lighting.to_dict()
    if extra:
        data.update(extra)
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
