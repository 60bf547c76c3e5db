"""The data passes a compositor expects besides colour (Beeble's set plus what Nuke's Relight node needs):
camera-space position P, head-space position Pref, camera-space normal N, the key-light shadow factor and
ID mattes of the face regions. Pure functions over per-frame maps (numpy only).

Names and channels (multilayer EXR, Blender's and Nuke's conventions): `N.X/Y/Z` (unit, camera space:
+x right, +y up, +z toward the viewer), `P.X/Y/Z` (camera space, head units: a visible point has z < 0),
`Pref.X/Y/Z` (head space, head units: the same surface point keeps its Pref as the head moves),
`specular.R/G/B`, `shadow.Y` (1 = lit by the key lights, lower in their cast shadows), `matte.Y` (the
person matte) and one `id_<region>.Y` per region in `ID_REGIONS` (skin, eyes, brows, lips, rest: hair,
ears, neck, clothes). The ID mattes are disjoint and add up to the matte. Beauty = albedo x shading +
specular inside the person (the RGBA's colour where the matte is 1).
"""

from __future__ import annotations

import numpy as np

from relight_core import camera as cam

ID_REGIONS = ("skin", "eyes", "brows", "lips", "rest")  # geometry labels 1..5, in that order
VECTOR_PASSES = ("N", "P", "Pref")
DATA_PASSES = ("specular", "shadow", "N", "P", "Pref", "matte", "id")


def positions(depth: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Depth (H, W) (= -z, head units, 0 = no surface) and intrinsics K (3, 3) of that image -> camera-space
    points P (H, W, 3) float32 at the pixel centres (0 where there is no surface)."""
    h, w = depth.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    p = cam.unproject(np.stack([xs + 0.5, ys + 0.5], axis=-1), depth, k).astype(np.float32)
    p[depth <= 0] = 0.0
    return p


def head_positions(p_cam: np.ndarray, cam2head: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Camera-space points (H, W, 3) -> head space (H, W, 3) float32 by cam2head (4, 4); 0 outside
    `inside` (H, W) bool."""
    out = cam.transform_points(cam2head, p_cam.reshape(-1, 3)).reshape(p_cam.shape).astype(np.float32)
    out[~inside] = 0.0
    return out


def id_mattes(labels: np.ndarray, alpha: np.ndarray) -> dict[str, np.ndarray]:
    """Labels (H, W) (geometry: 0 background, 1..5 = ID_REGIONS) and the matte alpha (H, W) -> {region:
    (H, W) float32}: each pixel's alpha goes to its region; matte pixels labelled background (the soft
    edge, outside the labels' own matte) go to "rest". Disjoint, and they add up to alpha."""
    lab = np.asarray(labels).astype(np.int64)
    lab = np.where((lab == 0) & (alpha > 0), len(ID_REGIONS), lab)
    a = np.asarray(alpha, dtype=np.float32)
    return {name: np.where(lab == i, a, np.float32(0.0)) for i, name in enumerate(ID_REGIONS, start=1)}


def shadow_factor(unshadowed: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Key-light shadow factor (h, w) float32 in [0, 1]: shaded / unshadowed shading, from the SH + key
    light shading before the cast shadows (h, w, 3) and the shadows' change to it (h, w, 3, <= 0), averaged
    over the channels; 1 where nothing was shaded."""
    s = np.asarray(unshadowed, dtype=np.float32).mean(axis=-1)
    d = np.asarray(delta, dtype=np.float32).mean(axis=-1)
    safe = np.maximum(s, np.float32(1e-6))
    return np.where(s > 1e-6, np.clip((s + d) / safe, 0.0, 1.0), np.float32(1.0)).astype(np.float32)


def exr_layers(layers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A frame's layers as EXR layers: "id" (H, W, 5) split into `id_<region>`, the others as they are."""
    out = {}
    for name, value in layers.items():
        if name == "id":
            for i, region in enumerate(ID_REGIONS):
                out[f"id_{region}"] = value[..., i]
        else:
            out[name] = value
    return out
