"""Regenerate the lighting presets (presets/lighting/<name>.json + <name>.png) from physical lights.

Run from the repository root: `.venv/bin/python presets/make_presets.py`. Each preset is a small set of
Blender-unit lights around a head at the origin (metres, DPR frame: +X image right, +Z up, the camera
at -Y). Its "sh" is `lights.sh_from_lights` at the head centre; "intensity" scales it so that the
brightest irradiance on the camera-facing hemisphere is 1 (the scale of DPR's light files); an SH
that would go negative somewhere (a hard light's ringing) is windowed (`sh.window_sh`, gauss); the key
lights are the hard sources as directional equivalents (direction and perpendicular irradiance) for
specular highlights and cast shadows; "lights" records the physical description (readers ignore it).
Colours are approximate blackbody linear-sRGB tints.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relight_core import lights as L  # noqa: E402
from relight_core import sh as S  # noqa: E402
from relight_core.commands.preview_light import render_lit_sphere, write_preview  # noqa: E402

K2700 = (1.0, 0.60, 0.30)
K3200 = (1.0, 0.70, 0.42)
K4000 = (1.0, 0.82, 0.64)
K5600 = (1.0, 0.94, 0.88)
D65 = (1.0, 1.0, 1.0)
SKY = (0.62, 0.78, 1.0)
BLUE_HOUR = (0.30, 0.45, 1.0)


def at(az_deg: float, el_deg: float, dist: float) -> np.ndarray:
    """Position around the head: azimuth 0 = the camera side (-Y), positive toward image right (+X)."""
    az, el = math.radians(az_deg), math.radians(el_deg)
    return dist * np.array([math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)])


def softbox(az: float, el: float, dist: float, size: float, power: float, color=D65, size_y=None,
            shape: str = "SQUARE") -> L.AreaLight:
    pos = at(az, el, dist)
    return L.AreaLight(pos, L.look_rotation(pos), shape, size, size_y or size, color, power)


def sky_map(zenith, horizon, ground, h: int = 32, w: int = 64, sun_dir=None, sun=(0, 0, 0)) -> np.ndarray:
    """Equirect radiance (h, w, 3): a sky blending horizon -> zenith with elevation, a flat ground."""
    th = (np.arange(h) + 0.5) / h * math.pi
    t = np.cos(th)[:, None, None] * np.ones((1, w, 1))
    up = np.clip(t, 0, 1)
    img = np.where(t > 0, np.asarray(horizon) * (1 - up) + np.asarray(zenith) * up, np.asarray(ground))
    return img.astype(np.float64)


def overcast_map(h: int = 32, w: int = 64) -> np.ndarray:
    """CIE standard overcast sky (L = Lz (1 + 2 cos theta) / 3), ground of albedo 0.2 below."""
    th = (np.arange(h) + 0.5) / h * math.pi
    t = np.cos(th)
    sky = (1 + 2 * np.clip(t, 0, 1)) / 3
    ground = 0.2 * 7 / 9
    lum = np.where(t > 0, sky, ground)
    return np.repeat(lum[:, None, None], w, axis=1) * np.array([0.92, 0.96, 1.0])


def key_equivalent(light) -> L.DirectionalLight:
    """A hard light -> DirectionalLight with its direction and perpendicular irradiance at the head, and
    the angular diameter of a disc of the light's area seen from the head (its shadows' softness)."""
    sh = light.sh((0.0, 0.0, 0.0))
    band1 = np.linalg.norm(sh[1:4], axis=0) / S._C1  # per channel: |E Y_1(d)| / C1 = E
    angle = 0.0
    if isinstance(light, L.AreaLight):
        radius = math.sqrt(light.area() / math.pi)
        angle = 2.0 * math.asin(min(radius / float(np.linalg.norm(light.position)), 1.0))
    return L.DirectionalLight(S.dominant_direction(sh), band1 / max(band1.max(), 1e-12), float(band1.max()),
                              angle=round(angle, 6))


PRESETS = {
    "soft-front": ("Large softbox just above the camera and a light fill: flat, flattering, few shadows.",
                   [softbox(0, 15, 1.4, 1.2, 400), L.WorldColor(D65, 2.0)], []),
    "rembrandt": ("Key 45 deg to the side and 40 deg up, a small softbox: a triangle of light under the "
                  "far eye, modest fill.",
                  [softbox(-45, 40, 1.6, 0.45, 400, K5600), L.WorldColor(D65, 1.2)], [0]),
    "split": ("Hard key from the side (90 deg): half the face lit, half in shadow.",
              [softbox(90, 5, 1.8, 0.3, 500, K5600), L.WorldColor(D65, 0.5)], [0]),
    "butterfly": ("Beauty dish high in front with a reflector below: a small shadow under the nose, "
                  "glamour light.",
                  [softbox(0, 45, 1.2, 0.55, 300, D65, shape="DISK"), softbox(0, -30, 0.9, 0.6, 40),
                   L.WorldColor(D65, 1.0)], [0]),
    "rim": ("Two strip lights behind the subject on both sides outline the head; dim front fill.",
            [softbox(135, 20, 1.5, 0.3, 500, D65, size_y=1.2, shape="RECTANGLE"),
             softbox(-135, 20, 1.5, 0.3, 500, D65, size_y=1.2, shape="RECTANGLE"),
             softbox(0, 10, 1.6, 1.0, 60), L.WorldColor(D65, 0.6)], [0, 1]),
    "overhead-office": ("Ceiling panels overhead (4000 K) and a bright bounce from the room: top-down, "
                        "shadowed eye sockets.",
                        [L.AreaLight(at(0, 90, 1.3) + np.array([0.6, 0.0, 0.0]), np.eye(3), "RECTANGLE",
                                     1.2, 0.6, K4000, 500),
                         L.AreaLight(at(0, 90, 1.3) + np.array([-0.6, 0.4, 0.0]), np.eye(3), "RECTANGLE",
                                     1.2, 0.6, K4000, 500),
                         L.WorldColor(K4000, 3.0)], []),
    "golden-hour": ("Low warm sun from the side-front (10 deg up) with a soft blue sky fill.",
                    [L.DirectionalLight(at(-60, 10, 1.0), K2700, 6.0, math.radians(0.53)),
                     L.EnvironmentMap(sky_map((0.35, 0.5, 0.9), (0.8, 0.75, 0.7), (0.25, 0.2, 0.15)),
                                      1.0)], [0]),
    "overcast": ("CIE overcast sky over a grey ground: soft top light, no hard shadows.",
                 [L.EnvironmentMap(overcast_map(), 3.0)], []),
    "low-key": ("A single small key from the side, almost no fill: dramatic, mostly dark.",
                [softbox(-75, 25, 1.3, 0.4, 300, K5600), L.WorldColor(D65, 0.08)], [0]),
    "blue-hour": ("Dim deep-blue twilight sky with a warm tungsten practical lamp beside the subject.",
                  [L.EnvironmentMap(sky_map((0.08, 0.12, 0.45), (0.25, 0.3, 0.55), (0.03, 0.03, 0.05)), 4.0),
                   L.PointLight(at(65, 5, 0.9), K3200, 60.0, 0.05)], [1]),
    "clamshell": ("Two soft lights above and below the camera: even, bright beauty light.",
                  [softbox(0, 35, 1.1, 0.8, 250), softbox(0, -25, 1.0, 0.8, 120), L.WorldColor(D65, 1.0)],
                  []),
    "window": ("Big daylight window to the side (1 x 1.5 m): soft directional light with a gentle "
               "fall-off into shadow.",
               [softbox(-80, 10, 1.2, 1.0, 600, SKY, size_y=1.5, shape="RECTANGLE"),
                L.WorldColor(K4000, 0.6)], []),
    "under-light": ("Warm light from below (campfire / horror): unnatural, upward shadows.",
                    [softbox(10, -55, 1.0, 0.3, 200, K2700), L.WorldColor(D65, 0.2)], [0]),
    "stage-spot": ("A hard spot from high front-right (30 deg cone) on a dark stage.",
                   [L.SpotLight(at(30, 50, 3.0), -at(30, 50, 1.0), D65, 2000, math.radians(30), 0.2),
                    L.WorldColor(D65, 0.05)], [0]),
}


def front_peak(sh: np.ndarray) -> float:
    """Peak luminance irradiance over normals of the camera-facing hemisphere (DPR Y < 0)."""
    n, mask = S.sphere_normals(64)
    return float(np.max(np.maximum(S.shade(n[mask], sh), 0) @ S.LUMA))


def sphere_min(sh: np.ndarray) -> float:
    """Lowest luminance irradiance over the whole sphere, relative to the highest."""
    e = S.shade(S._fibonacci_sphere(2000), sh) @ S.LUMA
    return float(e.min() / max(e.max(), 1e-12))


def make(out_dir: Path) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (desc, lights, key_idx) in PRESETS.items():
        sh = L.sh_from_lights(lights)
        window = None
        if sphere_min(sh) < 0:  # a hard light rings below zero: window it (see sh.window_sh)
            window = "gauss"
            sh = L.sh_from_lights(lights, window=window)
        keys = [key_equivalent(lights[i]) for i in key_idx]
        lighting = L.Lighting(name=name, description=desc, sh=sh, key_lights=keys,
                              intensity=round(1.0 / front_peak(sh), 6))
        physical = [lt.to_dict() for lt in lights]
        L.save_lighting(out_dir / f"{name}.json", lighting,
                        extra={"lights": physical, "window": window, "generator": "presets/make_presets.py"})
        rgba = render_lit_sphere(lighting.effective_sh(), lighting.effective_key_lights(), 256)
        write_preview(str(out_dir / f"{name}.png"), rgba)
    return list(PRESETS)


if __name__ == "__main__":
    names = make(ROOT / "presets" / "lighting")
    print(f"{len(names)} presets written to presets/lighting: {', '.join(names)}")
