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
KEY_LIGHT_MAX_RADIUS = 0.25  # head units; softer point/spot lights are left to the SH alone
ENV_MAX_WIDTH = 256  # environment maps are box-filtered down to this width before the SH fit

_env_cache: dict[tuple, np.ndarray] = {}


# --------------------------------------------------------------------------------------------- frames


def anchor_inverse(anchor) -> np.ndarray:
    """(4, 4) world -> anchor-local matrix (identity without an anchor)."""
    if anchor is None:
        return np.eye(4)
    return np.linalg.inv(np.array(anchor.matrix_world, dtype=np.float64))


def _local(inv: np.ndarray, obj) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An object's pose in the anchor frame: (position (3,), rotation (3, 3) orthonormal, scale (3,))."""
    m = inv @ np.array(obj.matrix_world, dtype=np.float64)
    lin = m[:3, :3]
    scale = np.linalg.norm(lin, axis=0)
    u, _, vt = np.linalg.svd(lin / np.maximum(scale, 1e-12))
    rot = u @ vt
    if np.linalg.det(rot) < 0:
        rot = -rot
    return m[:3, 3].copy(), rot, scale


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


def scene_lights(scene, anchor) -> tuple[list, list[dict]]:
    """The scene's lights as `relight_core.lights` objects in the anchor (DPR) frame, and the key lights
    as request dicts ({type, direction|position, color, strength|power}). Scene exposure is NOT applied
    here (see `scene_sh`). Hidden-in-render lights and zero-energy lights are skipped."""
    L = core_module("lights")
    inv = anchor_inverse(anchor)
    # Blender units per head unit; a point/spot radius ignores the light object's own scale (as Cycles)
    unit = float(np.linalg.norm(np.linalg.inv(inv)[:3, :3], axis=0).mean())
    lights: list = []
    keys: list[dict] = []
    for obj in scene.objects:
        if obj.type != "LIGHT" or obj.hide_render:
            continue
        data = obj.data
        energy = _light_energy(data)
        if energy <= 0.0:
            continue
        color = _light_color(data)
        pos, rot, scale = _local(inv, obj)
        emit = -rot[:, 2]  # Blender lights shine along their local -Z
        radius = float(getattr(data, "shadow_soft_size", 0.0)) / unit
        if data.type == "SUN":
            to_light = -emit
            lights.append(L.DirectionalLight(direction=to_light, color=color, strength=energy,
                                             angle=float(getattr(data, "angle", 0.0))))
            keys.append({"type": "directional", "direction": to_light.tolist(), "color": color.tolist(),
                         "strength": energy})
        elif data.type == "POINT":
            lights.append(L.PointLight(position=pos, color=color, power=energy, radius=radius))
            if radius <= KEY_LIGHT_MAX_RADIUS:
                keys.append({"type": "point", "position": pos.tolist(), "color": color.tolist(),
                             "power": energy, "radius": radius})
        elif data.type == "SPOT":
            lights.append(L.SpotLight(position=pos, direction=emit, color=color, power=energy,
                                      spot_size=float(data.spot_size), spot_blend=float(data.spot_blend),
                                      radius=radius))
            if radius <= KEY_LIGHT_MAX_RADIUS:
                keys.append({"type": "point", "position": pos.tolist(), "color": color.tolist(),
                             "power": energy, "radius": radius})
        elif data.type == "AREA":
            size = float(data.size) * float(scale[0])
            size_y = float(getattr(data, "size_y", data.size)) * float(scale[1])
            if data.shape in {"SQUARE", "DISK"}:
                size_y = float(data.size) * float(scale[1])
            power = energy
            if not getattr(data, "normalize", True):
                area = size * size_y * (math.pi / 4 if data.shape in {"DISK", "ELLIPSE"} else 1.0)
                power = energy * area
            lights.append(L.AreaLight(position=pos, rotation=rot, shape=data.shape, size=size,
                                      size_y=size_y, color=color, power=power))
    world = world_light(scene, anchor)
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


def world_light(scene, anchor):
    """The World as a `WorldColor` or `EnvironmentMap` in the anchor frame (None when black/absent).

    Supports Background <- (colour | Environment Texture [<- Mapping rotation]) and, without nodes,
    `world.color`. The environment image keeps Blender's equirect layout (row 0 = +Z after the flip of
    Blender's bottom-up pixel rows); its orientation comes from `environment_rotation`.
    """
    L = core_module("lights")
    world = scene.world
    if world is None:
        return None
    tree = world.node_tree
    # 5.0 always uses the node tree (`use_nodes` is deprecated there); 4.5 may use the plain colour.
    if tree is None or (bpy.app.version < (5, 0, 0) and not world.use_nodes):
        color = np.array(world.color, dtype=np.float64)
        return L.WorldColor(color=color, strength=1.0) if color.max() > 0 else None
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
        a_rot = np.eye(3) if anchor is None else _local(np.eye(4), anchor)[1]
        return L.EnvironmentMap(pixels=_env_pixels(src.image), strength=strength,
                                rotation=environment_rotation(a_rot, mapping))
    color = np.array(bg.inputs["Color"].default_value[:3], dtype=np.float64)
    return L.WorldColor(color=color, strength=strength) if color.max() > 0 else None


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


def scene_sh(scene, anchor) -> tuple[np.ndarray, list[dict]]:
    """(9, 3) irradiance SH of the scene lights at the anchor (DPR frame, x 2**exposure) and key lights
    (with the exposure folded into strength/power)."""
    L = core_module("lights")
    lights, keys = scene_lights(scene, anchor)
    k = exposure_scale(scene)
    sh = np.asarray(L.sh_from_lights(lights, receiver=(0.0, 0.0, 0.0)), dtype=np.float64) if lights \
        else np.zeros((9, 3))
    for key in keys:
        for f in ("strength", "power"):
            if f in key:
                key[f] = key[f] * k
    return sh * k, keys


def scene_sh_frames(scene, anchor, frames: list[int]) -> tuple[np.ndarray, list[list[dict]]]:
    """SH per timeline frame: (F, 9, 3) and key lights per frame. The current frame is restored."""
    current = scene.frame_current, scene.frame_subframe
    out, keys = [], []
    try:
        for f in frames:
            scene.frame_set(int(f))
            sh, k = scene_sh(scene, anchor)
            out.append(sh)
            keys.append(k)
    finally:
        scene.frame_set(current[0], subframe=current[1])
    return np.asarray(out).reshape(len(frames), 9, 3), keys


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
    """Create or update the lit-sphere preview image (float, linear) from `sh`; None -> grey sphere."""
    img = bpy.data.images.get(PREVIEW_IMAGE)
    if img is None or tuple(img.size) != (PREVIEW_SIZE, PREVIEW_SIZE):
        if img is not None:
            bpy.data.images.remove(img)
        img = bpy.data.images.new(PREVIEW_IMAGE, PREVIEW_SIZE, PREVIEW_SIZE, alpha=True, float_buffer=True)
    if sh is None:
        sh = np.zeros((9, 3))
        sh[0] = 0.5 * math.pi / float(core_module("sh").sh_basis(np.array([0.0, 0.0, 1.0]))[0])
    rgba = lit_sphere(np.asarray(sh))
    img.pixels.foreach_set(rgba.ravel())
    img.update()
    preview = img.preview_ensure() if hasattr(img, "preview_ensure") else None
    if preview is not None and hasattr(preview, "reload"):
        preview.reload()
    return img
