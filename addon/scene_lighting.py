"""Blender scene lighting -> spherical-harmonics light at the head, and the lit-sphere preview image.

The scene's sun, point, spot and area lights and the World (colour x strength, or an Environment
Texture image) are expressed in the head anchor's local frame, which is the DPR frame of the frontal view
(contracts: anchor local (bx, by, bz) = DPR (X, Y, Z)), and summed to irradiance SH with
`relight_core.lights.sh_from_lights`. Light colour, energy, the light's own exposure and the scene's
exposure (x 2**exposure) are applied. Without an anchor the world origin and axes stand in for it.
"""

from __future__ import annotations

import math

import bpy
import numpy as np

from ._core import core_module

PREVIEW_IMAGE = "Portrait Relight Lit Sphere"
PREVIEW_SIZE = 96
PREVIEW_ALBEDO = 0.8
PREVIEW_PEAK = 0.8  # the preview's brightest pixel: exposure-normalised, so the light's direction reads
KEY_LIGHT_MAX_RADIUS = 0.25  # head units; softer point/spot lights are left to the SH alone
ENV_MAX_WIDTH = 256  # environment maps are box-filtered down to this width before the SH fit

_env_cache: dict[tuple, np.ndarray] = {}


# --------------------------------------------------------------------------------------------- frames


def affine_inverse(m: np.ndarray) -> np.ndarray:
    """(4, 4) inverse of an affine 4x4 matrix (no LAPACK call: cheap enough to run per frame)."""
    m = np.asarray(m, dtype=np.float64)
    a, t = m[:3, :3], m[:3, 3]
    cof = np.stack([np.cross(a[:, 1], a[:, 2]), np.cross(a[:, 2], a[:, 0]), np.cross(a[:, 0], a[:, 1])])
    det = float(np.dot(a[:, 0], cof[0]))
    inv = np.eye(4)
    inv[:3, :3] = cof / (det if abs(det) > 1e-300 else 1e-300)
    inv[:3, 3] = -inv[:3, :3] @ t
    return inv


def anchor_inverse(anchor) -> np.ndarray:
    """(4, 4) world -> anchor-local matrix (identity without an anchor)."""
    if anchor is None:
        return np.eye(4)
    return affine_inverse(np.array(anchor.matrix_world, dtype=np.float64))


def _local_pose(inv: np.ndarray, world: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A world pose (4, 4) in the anchor frame: (position (3,), rotation (3, 3) orthonormal, scale (3,))."""
    m = inv @ world
    lin = m[:3, :3]
    scale = np.linalg.norm(lin, axis=0)
    u, _, vt = np.linalg.svd(lin / np.maximum(scale, 1e-12))
    rot = u @ vt
    if np.linalg.det(rot) < 0:
        rot = -rot
    return m[:3, 3].copy(), rot, scale


def _local(inv: np.ndarray, obj) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An object's pose in the anchor frame: (position (3,), rotation (3, 3) orthonormal, scale (3,))."""
    return _local_pose(inv, np.array(obj.matrix_world, dtype=np.float64))


def _light_color(light) -> np.ndarray:
    """Linear RGB colour (3,) of a Blender light, including its blackbody temperature tint (5.0)."""
    c = np.array(light.color, dtype=np.float64)
    if getattr(light, "use_temperature", False):
        c = c * np.array(light.temperature_color, dtype=np.float64)
    return c


def _light_energy(light) -> float:
    """Blender light energy (W, or W/m^2 for a sun) times 2**(the light's own exposure)."""
    return float(light.energy) * 2.0 ** float(getattr(light, "exposure", 0.0))


# --------------------------------------------------------------------------------------------- lights


def light_records(scene) -> list[dict]:
    """Plain-data snapshot of the scene's lights at the current frame (no bpy objects inside, so it can be
    turned into SH on another thread): type, world matrix (4, 4), energy (x the light's exposure), colour
    and the shape parameters. Hidden-in-render and zero-energy lights are left out."""
    recs = []
    for obj in scene.objects:
        if obj.type != "LIGHT" or obj.hide_render:
            continue
        data = obj.data
        energy = _light_energy(data)
        if energy <= 0.0:
            continue
        rec = {"type": data.type, "matrix": np.array(obj.matrix_world, dtype=np.float64), "energy": energy,
               "color": _light_color(data), "radius": float(getattr(data, "shadow_soft_size", 0.0))}
        if data.type == "SUN":
            rec["angle"] = float(getattr(data, "angle", 0.0))
        elif data.type == "SPOT":
            rec["spot_size"], rec["spot_blend"] = float(data.spot_size), float(data.spot_blend)
        elif data.type == "AREA":
            rec.update(shape=data.shape, size=float(data.size),
                       size_y=float(getattr(data, "size_y", data.size)),
                       normalize=bool(getattr(data, "normalize", True)))
        recs.append(rec)
    return recs


def lights_from_records(recs: list[dict], anchor_matrix: np.ndarray) -> tuple[list, list[dict]]:
    """`light_records` -> (`relight_core.lights` objects in the anchor (DPR) frame, key-light request
    dicts {type, direction|position, color, strength|power}). No bpy: safe on any thread."""
    L = core_module("lights")
    a = np.asarray(anchor_matrix, dtype=np.float64)
    inv = affine_inverse(a)
    # Blender units per head unit; a point/spot radius ignores the light object's own scale (as Cycles)
    unit = float(np.linalg.norm(a[:3, :3], axis=0).mean())
    lights: list = []
    keys: list[dict] = []
    for rec in recs:
        energy, color, kind = rec["energy"], rec["color"], rec["type"]
        pos, rot, scale = _local_pose(inv, rec["matrix"])
        emit = -rot[:, 2]  # Blender lights shine along their local -Z
        radius = rec["radius"] / unit
        if kind == "SUN":
            to_light = -emit
            lights.append(L.DirectionalLight(direction=to_light, color=color, strength=energy,
                                             angle=rec["angle"]))
            keys.append({"type": "directional", "direction": to_light.tolist(), "color": color.tolist(),
                         "strength": energy, "angle": rec["angle"]})
        elif kind in ("POINT", "SPOT"):
            if kind == "POINT":
                lights.append(L.PointLight(position=pos, color=color, power=energy, radius=radius))
            else:
                lights.append(L.SpotLight(position=pos, direction=emit, color=color, power=energy,
                                          spot_size=rec["spot_size"], spot_blend=rec["spot_blend"],
                                          radius=radius))
            if radius <= KEY_LIGHT_MAX_RADIUS:
                keys.append({"type": "point", "position": pos.tolist(), "color": color.tolist(),
                             "power": energy, "radius": radius})
        elif kind == "AREA":
            shape = rec["shape"]
            size = rec["size"] * float(scale[0])
            size_y = (rec["size"] if shape in {"SQUARE", "DISK"} else rec["size_y"]) * float(scale[1])
            power = energy
            if not rec["normalize"]:
                area = size * size_y * (math.pi / 4 if shape in {"DISK", "ELLIPSE"} else 1.0)
                power = energy * area
            lights.append(L.AreaLight(position=pos, rotation=rot, shape=shape, size=size, size_y=size_y,
                                      color=color, power=power))
    return lights, keys


def _anchor_matrix(anchor) -> np.ndarray:
    return np.eye(4) if anchor is None else np.array(anchor.matrix_world, dtype=np.float64)


def scene_lights(scene, anchor) -> tuple[list, list[dict]]:
    """The scene's lights as `relight_core.lights` objects in the anchor (DPR) frame, and the key lights
    as request dicts ({type, direction|position, color, strength|power}). Scene exposure is NOT applied
    here (see `scene_sh`). Hidden-in-render lights and zero-energy lights are skipped."""
    a = _anchor_matrix(anchor)
    lights, keys = lights_from_records(light_records(scene), a)
    world = world_from_record(world_record(scene), a)
    if world is not None:
        lights.append(world)
    return lights, keys


def _active_output(tree, bl_idname: str):
    outs = [n for n in tree.nodes if n.bl_idname == bl_idname]
    for n in outs:
        if getattr(n, "is_active_output", False):
            return n
    return outs[0] if outs else None


def _linked_from(socket):
    return socket.links[0].from_node if socket.is_linked and socket.links else None


def _env_pixels(image) -> np.ndarray:
    """(H, W, 3) float32 linear pixels of a Blender image, row 0 at the TOP, box-filtered to at most
    ENV_MAX_WIDTH wide (cached per image name, size and file path). 8-bit sRGB images are decoded."""
    key = (image.name, tuple(image.size), image.filepath, image.is_dirty)
    if key in _env_cache:
        return _env_cache[key]
    w, h = int(image.size[0]), int(image.size[1])
    if w == 0 or h == 0:
        raise ValueError(f"Environment image '{image.name}' has no pixels; check its file.")
    ch = int(image.channels)
    buf = np.empty(w * h * ch, dtype=np.float32)
    image.pixels.foreach_get(buf)
    px = buf.reshape(h, w, ch)[::-1, :, :3]
    if ch < 3:
        px = np.repeat(buf.reshape(h, w, ch)[::-1, :, :1], 3, axis=2)
    if not image.is_float and "srgb" in image.colorspace_settings.name.lower():
        # 8-bit images give their stored (sRGB-encoded) values; radiance must be linear
        px = np.where(px <= 0.04045, px / 12.92, ((px + 0.055) / 1.055) ** 2.4)
    k = max(1, int(math.ceil(w / ENV_MAX_WIDTH)))
    if k > 1:
        hh, ww = (h // k) * k, (w // k) * k
        px = px[:hh, :ww].reshape(hh // k, k, ww // k, k, 3).mean(axis=(1, 3))
    px = np.ascontiguousarray(px, dtype=np.float32)
    _env_cache.clear()
    _env_cache[key] = px
    return px


def _euler_xyz(e) -> np.ndarray:
    """(3, 3) rotation of a Blender XYZ Euler (radians)."""
    x, y, z = (float(v) for v in e)
    cx, sx, cy, sy, cz, sz = math.cos(x), math.sin(x), math.cos(y), math.sin(y), math.cos(z), math.sin(z)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def world_record(scene) -> tuple | None:
    """Plain-data snapshot of the World's light: ("color", rgb (3,), strength) | ("env", pixels (H, W, 3),
    strength, mapping rotation (3, 3)) | None when black or absent.

    Supports Background <- (colour | Environment Texture [<- Mapping rotation]) and, without nodes,
    `world.color`. The environment image keeps Blender's equirect layout (row 0 = +Z after the flip of
    Blender's bottom-up pixel rows)."""
    world = scene.world
    if world is None:
        return None
    tree = world.node_tree
    # 5.0 always uses the node tree (`use_nodes` is deprecated there); 4.5 may use the plain colour.
    if tree is None or (bpy.app.version < (5, 0, 0) and not world.use_nodes):
        color = np.array(world.color, dtype=np.float64)
        return ("color", color, 1.0) if color.max() > 0 else None
    out = _active_output(tree, "ShaderNodeOutputWorld")
    bg = _linked_from(out.inputs["Surface"]) if out is not None else None
    if bg is None or bg.bl_idname != "ShaderNodeBackground":
        return None
    strength = float(bg.inputs["Strength"].default_value)
    if strength <= 0:
        return None
    src = _linked_from(bg.inputs["Color"])
    if src is not None and src.bl_idname == "ShaderNodeTexEnvironment" and src.image is not None:
        mapping = np.eye(3)
        vec_src = _linked_from(src.inputs["Vector"])
        if vec_src is not None and vec_src.bl_idname == "ShaderNodeMapping" and "Rotation" in vec_src.inputs:
            mapping = _euler_xyz(vec_src.inputs["Rotation"].default_value)
            if getattr(vec_src, "vector_type", "POINT") == "TEXTURE":
                mapping = mapping.T
        return ("env", _env_pixels(src.image), strength, mapping)
    color = np.array(bg.inputs["Color"].default_value[:3], dtype=np.float64)
    return ("color", color, strength) if color.max() > 0 else None


def world_from_record(rec: tuple | None, anchor_matrix: np.ndarray):
    """`world_record` -> a `WorldColor` or `EnvironmentMap` in the anchor frame (None for None)."""
    L = core_module("lights")
    if rec is None:
        return None
    if rec[0] == "color":
        return L.WorldColor(color=rec[1], strength=rec[2])
    a_rot = _local_pose(np.eye(4), np.asarray(anchor_matrix, dtype=np.float64))[1]
    return L.EnvironmentMap(pixels=rec[1], strength=rec[2], rotation=environment_rotation(a_rot, rec[3]))


def world_light(scene, anchor):
    """The World as a `WorldColor` or `EnvironmentMap` in the anchor frame (None when black/absent)."""
    return world_from_record(world_record(scene), _anchor_matrix(anchor))


def environment_rotation(anchor_rot: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """(3, 3) rotation taking directions of the environment map's frame to the anchor (DPR) frame, as
    `relight_core.lights.EnvironmentMap.rotation` expects (radiance at DPR direction w = pixels(R^T w)).

    In Blender the radiance from world direction d is T(M d), with T the texture in Blender's equirect
    frame (which is relight_core's map frame, `lights.BLENDER_EQUIRECT_TO_MAP`) and M the Mapping node's
    rotation; world and anchor directions relate by d = A w (A = anchor rotation). So R^T = B M A.
    """
    b = np.asarray(getattr(core_module("lights"), "BLENDER_EQUIRECT_TO_MAP", np.eye(3)), dtype=np.float64)
    return (b @ mapping @ anchor_rot).T


# --------------------------------------------------------------------------------------------- SH


def exposure_scale(scene) -> float:
    """2**(Colour Management exposure) of a scene."""
    return 2.0 ** float(scene.view_settings.exposure)


def light_snapshot(scene, anchor, world=None) -> dict:
    """Everything the light at the head depends on at the current frame, as plain data: the light records,
    the World record (`world` reuses one taken before, for a World that does not change), the anchor's
    world matrix and the exposure scale."""
    return {"lights": light_records(scene), "world": world_record(scene) if world is None else world,
            "anchor": _anchor_matrix(anchor), "exposure": exposure_scale(scene)}


def snapshot_sh(snap: dict) -> tuple[np.ndarray, list[dict]]:
    """(9, 3) irradiance SH (DPR frame, x exposure) and key lights (exposure folded into strength/power) of
    a `light_snapshot`. No bpy: safe on any thread."""
    L = core_module("lights")
    lights, keys = lights_from_records(snap["lights"], snap["anchor"])
    world = world_from_record(snap["world"], snap["anchor"])
    if world is not None:
        lights.append(world)
    k = snap["exposure"]
    sh = np.asarray(L.sh_from_lights(lights, receiver=(0.0, 0.0, 0.0)), dtype=np.float64) if lights \
        else np.zeros((9, 3))
    for key in keys:
        for f in ("strength", "power"):
            if f in key:
                key[f] = key[f] * k
    return sh * k, keys


def scene_sh(scene, anchor) -> tuple[np.ndarray, list[dict]]:
    """(9, 3) irradiance SH of the scene lights at the anchor (DPR frame, x 2**exposure) and key lights
    (with the exposure folded into strength/power), at the current frame."""
    return snapshot_sh(light_snapshot(scene, anchor))


def _snapshot_key(snap: dict) -> bytes:
    parts = [np.asarray(snap["anchor"]).tobytes(), repr(snap["exposure"]).encode()]
    for rec in snap["lights"]:
        parts += [np.asarray(v).tobytes() if isinstance(v, np.ndarray) else repr(v).encode()
                  for v in rec.values()]
    return b"|".join(parts) + repr(id(snap["world"])).encode()


def snapshots_sh(snaps: list[dict]) -> tuple[np.ndarray, list[list[dict]]]:
    """SH (F, 9, 3) and key lights per frame of a list of `light_snapshot`s; equal snapshots are computed
    once. No bpy: this is the part of a request that may run on a worker thread."""
    cache: dict[bytes, tuple] = {}
    out, keys = [], []
    for snap in snaps:
        key = _snapshot_key(snap)
        if key not in cache:
            cache[key] = snapshot_sh(snap)
        sh, k = cache[key]
        out.append(sh)
        keys.append([dict(d) for d in k])
    return np.asarray(out).reshape(len(snaps), 9, 3), keys


def scene_sh_frames(scene, anchor, frames: list[int]) -> tuple[np.ndarray, list[list[dict]]]:
    """SH per timeline frame: (F, 9, 3) and key lights per frame. The current frame is restored."""
    from . import animation

    return snapshots_sh(animation.sample(scene, frames, anchor=anchor, lights=True)["lights"])


# --------------------------------------------------------------------------------------------- preview


def lit_sphere(sh: np.ndarray, size: int = PREVIEW_SIZE, albedo: float = PREVIEW_ALBEDO) -> np.ndarray:
    """(size, size, 4) float32 linear RGBA of a Lambertian sphere lit by `sh` (9, 3), seen along +Y
    (DPR frame: +X right, +Z up). Row 0 is the BOTTOM (Blender pixel order); alpha 0 outside the disc.
    Radiance = albedo * E / pi."""
    S = core_module("sh")
    c = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    x, z = np.meshgrid(c, c)  # z grows with the row index: row 0 is the bottom
    r2 = x * x + z * z
    inside = r2 < 1.0
    n = np.stack([x, -np.sqrt(np.clip(1.0 - r2, 0.0, 1.0)), z], axis=-1)
    e = np.asarray(S.shade(n.reshape(-1, 3), np.asarray(sh, dtype=np.float64)), dtype=np.float64)
    e = e.reshape(size, size, -1)
    if e.shape[-1] == 1:
        e = np.repeat(e, 3, axis=-1)
    rgba = np.zeros((size, size, 4), dtype=np.float32)
    rgba[..., :3] = np.clip(albedo * e / math.pi, 0.0, None) * inside[..., None]
    rgba[..., 3] = inside
    return rgba


def update_preview_image(sh: np.ndarray | None) -> bpy.types.Image:
    """Create or update the lit-sphere preview image (float, linear) from `sh`; None -> grey sphere. The
    sphere is exposure-normalised (brightest pixel PREVIEW_PEAK), so it shows where the light comes from
    and its colour whatever the strength (the strength is in the panel's numbers and the render)."""
    img = bpy.data.images.get(PREVIEW_IMAGE)
    if img is None or tuple(img.size) != (PREVIEW_SIZE, PREVIEW_SIZE):
        if img is not None:
            bpy.data.images.remove(img)
        img = bpy.data.images.new(PREVIEW_IMAGE, PREVIEW_SIZE, PREVIEW_SIZE, alpha=True, float_buffer=True)
    if sh is None:
        sh = np.zeros((9, 3))
        sh[0] = 0.5 * math.pi / float(core_module("sh").sh_basis(np.array([0.0, 0.0, 1.0]))[0])
    rgba = lit_sphere(np.asarray(sh))
    peak = float(rgba[..., :3].max())
    if peak > 0.0:
        rgba[..., :3] *= PREVIEW_PEAK / peak
    img.pixels.foreach_set(rgba.ravel())
    img.update()
    preview = img.preview_ensure() if hasattr(img, "preview_ensure") else None
    if preview is not None and hasattr(preview, "reload"):
        preview.reload()
    return img
