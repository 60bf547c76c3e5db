"""The tracked head in Blender's 3D scene, as an artist gets it: Track on a fixture clip's movie strip runs
the real engine worker (its "track" task) and builds the solved camera with the footage behind it and the
deforming head mesh (Mesh Cache modifier on the engine's PC2 cache). Measured independently of the engine's
own projection: Blender evaluates the modifier and the animated camera, `world_to_camera_view` projects the
evaluated vertices, and the result is compared with the engine's tracked landmarks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
from test_addon_blender import active_scene, enable_addon  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.blender, pytest.mark.slow]

FIRST_SOURCE, LENGTH, START = 10, 20, 1  # the strip shows source frames 10..29 from timeline frame 11
CHECK_FRAMES = (11, 20, 30)
INNER_LIPS = (13, 14)


def _engine_python() -> str | None:
    exe = os.environ.get("RELIGHT_ENGINE_PYTHON") or str(REPO / ".venv" / "bin" / "python")
    return exe if Path(exe).exists() else None


@pytest.fixture(scope="module")
def tracked(fixtures_dir, tmp_path_factory):
    """A scene with a movie strip of lp_d0 (source frames 10..29 at timeline 11..30), tracked once."""
    exe = _engine_python()
    if exe is None:
        pytest.skip("no engine Python (.venv/bin/python or $RELIGHT_ENGINE_PYTHON)")
    enable_addon()
    prefs = bpy.context.preferences.addons["portrait_relight"].preferences
    prefs.engine_python, prefs.device = exe, "cpu"
    from portrait_relight import sequencer

    out = tmp_path_factory.mktemp("track")
    with active_scene("PR track") as sc:
        strips = sequencer.strips_of(sc, ensure=True)
        strip = strips.new_movie(name="talk", filepath=str(fixtures_dir / "videos" / "lp_d0.mp4"), channel=1,
                                 frame_start=START)
        strip.frame_offset_start = FIRST_SOURCE
        strip.frame_final_duration = LENGTH
        sc.sequence_editor.active_strip = strip
        s = sc.portrait_relight
        s.output_dir = str(out)
        s.size = 512
        assert bpy.ops.portrait_relight.track(synchronous=True) == {"FINISHED"}, s.last_result
        from portrait_relight import request

        yield sc, strip, Path(request.strip_output(bpy.context, strip))  # <out>/<scene>/<strip>
    prefs.engine_python = ""


def projected_landmarks(sc, frame: int) -> np.ndarray:
    """The head mesh's landmark vertices (478, 2) in render pixels at a timeline frame, as Blender sees
    them: modifier-evaluated mesh, world matrices, the scene camera's view."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    sc.frame_set(frame)
    dg = bpy.context.evaluated_depsgraph_get()
    head = bpy.data.objects["Tracked Head"].evaluated_get(dg)
    co = np.empty(len(head.data.vertices) * 3)
    head.data.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)[:478]
    mw = np.array(head.matrix_world)
    world = co @ mw[:3, :3].T + mw[:3, 3]
    w, h = sc.render.resolution_x, sc.render.resolution_y
    ndc = np.array([tuple(world_to_camera_view(sc, sc.camera.evaluated_get(dg), Vector(p))) for p in world])
    return np.stack([ndc[:, 0] * w, (1.0 - ndc[:, 1]) * h], axis=1)


def tracked_landmarks(folder: Path, source: int, w: int, h: int) -> np.ndarray:
    """The engine's tracked landmarks (478, 2) of a source frame from the cached analysis, in (w, h) px."""
    with np.load(folder / ".relight" / "analysis.npz") as z:
        meta = json.loads(str(z["meta"]))
        rows = {int(i): k for k, i in enumerate(z["frame_indices"])}
        lm = z["landmarks"][rows[source]]
    return lm[:, :2] * np.array([w / meta["width"], h / meta["height"]])


def reprojection_px(sc, folder: Path, frames=CHECK_FRAMES, shift: int = START) -> np.ndarray:
    """(F, 478) px distances per timeline frame between the projected mesh landmarks and the tracked ones
    of the source frame the strip shows there (timeline frame - shift)."""
    w, h = sc.render.resolution_x, sc.render.resolution_y
    return np.stack([np.linalg.norm(projected_landmarks(sc, f) - tracked_landmarks(folder, f - shift, w, h),
                                    axis=1) for f in frames])


def test_track_builds_camera_plate_and_cached_head(tracked):
    sc, strip, folder = tracked
    cam = sc.camera
    assert cam is not None and cam.name == "Tracked Camera"
    assert cam.parent == sc.portrait_relight.anchor
    bg = cam.data.background_images[0]
    assert cam.data.show_background_images and bg.source == "MOVIE_CLIP"
    assert Path(bpy.path.abspath(bg.clip.filepath)).name == "lp_d0.mp4"
    # scene frame 11 shows source frame 10: the clip starts playing (its frame 0) at timeline frame 1
    assert bg.clip.frame_start == strip.frame_final_start - FIRST_SOURCE == 1
    head = bpy.data.objects["Tracked Head"]
    mod = head.modifiers["Head Cache"]
    assert mod.type == "MESH_CACHE" and mod.cache_format == "PC2" and Path(mod.filepath).is_file()
    assert mod.frame_start == strip.frame_final_start
    assert (sc.render.resolution_x, sc.render.resolution_y) == (512, 512)
    assert "tracked 20 frames" in sc.portrait_relight.last_result
    # the analysis sits where a relight of the strip looks for it, with the signature it checks
    assert (folder / ".relight" / "analysis.npz").is_file()


def test_mesh_landmarks_land_on_tracked_landmarks(tracked):
    sc, _strip, folder = tracked
    errs = reprojection_px(sc, folder)
    print(f"reprojection at {CHECK_FRAMES}: median {np.median(errs, axis=1)} px, max {errs.max():.2e} px")
    assert np.median(errs, axis=1).max() <= 1.5 and errs.max() <= 1.5


def test_head_mesh_animates_with_the_mouth(tracked):
    sc, _strip, _folder = tracked
    dg = bpy.context.evaluated_depsgraph_get()
    opening = []
    for f in range(START + FIRST_SOURCE, START + FIRST_SOURCE + LENGTH):
        sc.frame_set(f)
        mesh = bpy.data.objects["Tracked Head"].evaluated_get(dg).data
        a, b = (np.array(mesh.vertices[i].co) for i in INNER_LIPS)
        opening.append(float(np.linalg.norm(a - b)))
    # lp_d0 opens its mouth over these frames: the inner lips part by several hundredths of a head unit
    assert max(opening) - min(opening) > 0.02, opening


def _render(sc, path: Path) -> np.ndarray:
    """Render the composite of the current frame to an EXR and read it back -> (H, W, 4) linear, row 0 top."""
    sc.render.filepath = str(path)
    sc.render.image_settings.file_format = "OPEN_EXR"
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(str(path))
    px = np.array(img.pixels[:], dtype=np.float32).reshape(img.size[1], img.size[0], 4)[::-1]
    bpy.data.images.remove(img)
    return px


def _hits_sphere(origins: np.ndarray, direction: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """(N,) bool: rays from origins (N, 3) along direction (3,) or (N, 3) (unit) meet the sphere ahead."""
    d = np.broadcast_to(direction, origins.shape)
    oc = origins - centre
    b = np.sum(oc * d, axis=1)
    disc = b * b - (np.sum(oc * oc, axis=1) - radius * radius)
    return (disc > 0) & (-b + np.sqrt(np.maximum(disc, 0)) > 0)


def _add(sc, name: str, obj_data, location, colour=None):
    obj = bpy.data.objects.new(name, obj_data)
    sc.collection.objects.link(obj)
    obj.location = location
    if colour is not None:
        mat = bpy.data.materials.new(name)
        if mat.node_tree is None:  # Blender 4.5 makes a material's nodes on request (5.0 always has them)
            mat.use_nodes = True
        bsdf = mat.node_tree.nodes["Principled BSDF"]
        bsdf.inputs["Base Color"].default_value = colour
        obj.data.materials.append(mat)
    return obj


def _primitive(kind: str, **kw):
    import bmesh

    bm = bmesh.new()
    (bmesh.ops.create_uvsphere if kind == "sphere" else bmesh.ops.create_cube)(bm, **kw)
    mesh = bpy.data.meshes.new(kind)
    bm.to_mesh(mesh)
    bm.free()
    return mesh


def _pixel_rays(sc, cam, w: int, h: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Unit world directions (N, 3) from the camera through the centres of render pixels (xs, ys)."""
    m = np.array(cam.matrix_world)
    tr, br, bl, tl = (m[:3, :3] @ np.array(v) for v in cam.data.view_frame(scene=sc))
    u, v = ((xs + 0.5) / w)[:, None], ((ys + 0.5) / h)[:, None]
    d = (tl + (tr - tl) * u) * (1 - v) + (bl + (br - bl) * u) * v
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _hits_box(eye: np.ndarray, dirs: np.ndarray, centre: np.ndarray, half: float) -> np.ndarray:
    """(N,) bool: rays from eye along dirs (N, 3) meet the axis-aligned cube (slab test)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = (centre - half - eye) / dirs
        t1 = (centre + half - eye) / dirs
    near = np.nanmax(np.minimum(t0, t1), axis=1)
    far = np.nanmin(np.maximum(t0, t1), axis=1)
    return (far >= near) & (far > 0)


def _first_hits(sc, dg, eye: np.ndarray, dirs: np.ndarray) -> list[str]:
    """Name of the first object hit by each ray from eye (Blender's ray cast), '' for none."""
    from mathutils import Vector

    out = []
    for d in dirs:
        hit, _loc, _n, _i, obj, _m = sc.ray_cast(dg, Vector(tuple(eye)), Vector(tuple(d)))
        out.append(obj.name if hit else "")
    return out


def test_cg_sphere_shadows_the_face_and_head_hides_cg_behind_it(tracked, tmp_path):
    """Cycles render of the one-click composite: a CG sphere between a sun and the head darkens the face
    where (by ray tests against the sphere) it shades it; a CG cube behind the head shows only where
    Blender's own ray cast from the camera reaches it before the head."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    sc, _strip, _folder = tracked
    sc.frame_set(20)
    # placed in the head anchor's space (an anchor the artist moved, or one an earlier test left in the
    # file, need not sit at the origin)
    anchor = np.array(sc.portrait_relight.anchor.matrix_world)
    to_light = anchor[:3, :3] @ np.array([-0.5, -0.6, 0.62])  # image left, toward the camera, up
    to_light /= np.linalg.norm(to_light)
    sun = _add(sc, "Sun", bpy.data.lights.new("Sun", "SUN"), (0, 0, 0))
    sun.data.energy, sun.data.angle = 4.0, 0.0
    sun.rotation_mode = "QUATERNION"
    sun.rotation_quaternion = Vector((0, 0, 1)).rotation_difference(Vector(tuple(to_light)))
    centre, radius = anchor[:3, :3] @ np.array([0.0, -0.35, 0.05]) + anchor[:3, 3] + 0.55 * to_light, 0.09
    sphere = _add(sc, "CG Sphere", _primitive("sphere", u_segments=32, v_segments=16, radius=radius),
                  tuple(centre), (0.8, 0.8, 0.8, 1.0))
    cube = _add(sc, "CG Cube", _primitive("cube", size=0.5),
                tuple(anchor[:3, :3] @ np.array([0.42, 0.45, 0.1]) + anchor[:3, 3]), (1.0, 0.0, 0.0, 1.0))
    try:
        assert bpy.ops.portrait_relight.setup_cg_composite() == {"FINISHED"}
        sc.cycles.samples, sc.cycles.use_denoising, sc.render.resolution_percentage = 16, False, 25
        sc.cycles.max_bounces = 0  # direct light only: light bounced off the cube would tint the head's side
        w, h = sc.render.resolution_x // 4, sc.render.resolution_y // 4
        with_cg = _render(sc, tmp_path / "cg.exr")
        sphere.hide_render = cube.hide_render = True
        plate = _render(sc, tmp_path / "plate.exr")
        sphere.hide_render = cube.hide_render = False

        dg = bpy.context.evaluated_depsgraph_get()
        head = bpy.data.objects["Tracked Head"].evaluated_get(dg)
        cam = sc.camera.evaluated_get(dg)
        mw = np.array(head.matrix_world)
        verts = np.array([mw[:3, :3] @ np.array(v.co) + mw[:3, 3] for v in head.data.vertices[:468]])
        normals = np.array([np.array(v.normal) for v in head.data.vertices[:468]]) @ mw[:3, :3].T
        eye = np.array(cam.matrix_world)[:3, 3]
        to_cam = (eye - verts) / np.linalg.norm(eye - verts, axis=1, keepdims=True)
        seen = (np.sum(normals * to_cam, axis=1) > 0.3) & ~_hits_sphere(verts, to_cam, centre, radius)
        lit = np.sum(normals * to_light, axis=1) > 0.3
        shade = _hits_sphere(verts, to_light, centre, radius * 0.8)  # well inside the shadow
        clear = ~_hits_sphere(verts, to_light, centre, radius * 1.5)
        ndc = np.array([tuple(world_to_camera_view(sc, cam, Vector(p))) for p in verts])
        cx = np.clip((ndc[:, 0] * w).astype(int), 0, w - 1)
        cy = np.clip(((1 - ndc[:, 1]) * h).astype(int), 0, h - 1)
        ratio = with_cg[cy, cx, :3].mean(axis=1) / np.maximum(plate[cy, cx, :3].mean(axis=1), 1e-4)
        inside, outside = ratio[seen & lit & shade], ratio[seen & lit & clear]
        assert len(inside) >= 5 and len(outside) >= 50, (len(inside), len(outside))
        print(f"shadow: {len(inside)} face vertices inside, median ratio {np.median(inside):.3f}; "
              f"{len(outside)} outside, {np.median(outside):.3f}")
        assert np.median(inside) < 0.7 and np.median(outside) > 0.95

        # the cube: in the pixels around its image, what does Blender's ray cast reach first through the
        # pixel and its four neighbours? Only pixels where all five agree are judged.
        ys, xs = np.mgrid[0:h, 0:w]
        xs, ys = xs.ravel().astype(float), ys.ravel().astype(float)
        rays = _pixel_rays(sc, cam, w, h, xs, ys)
        first = np.array(_first_hits(sc, dg, eye, rays)).reshape(h, w)
        red = (with_cg[..., 0] - with_cg[..., 1]) - (plate[..., 0] - plate[..., 1])
        core = first[1:-1, 1:-1]
        agree = ((core == first[:-2, 1:-1]) & (core == first[2:, 1:-1]) & (core == first[1:-1, :-2])
                 & (core == first[1:-1, 2:]))
        in_box = _hits_box(eye, rays, np.array(cube.location), 0.25).reshape(h, w)
        hidden = red[1:-1, 1:-1][agree & (core == "Tracked Head") & in_box[1:-1, 1:-1]]
        shown = red[1:-1, 1:-1][agree & (core == "CG Cube")]
    finally:
        for ob in (sun, sphere, cube):
            bpy.data.objects.remove(ob)
    # the plate is frame-aligned: timeline frame 20 shows source frame 19 (the footage, decoded by the engine)
    from relight_core import io

    movie = bpy.path.abspath(sc.sequence_editor.active_strip.filepath)
    diffs = {i: float(np.abs(plate[..., :3] - rgb).mean())
             for i, rgb in io.open_footage(movie, frames=(17, 22), size=w)}
    assert min(diffs, key=diffs.get) == 19, diffs
    assert len(hidden) >= 100 and len(shown) >= 100, (len(hidden), len(shown))
    print(f"cube: {len(hidden)} px behind the head (red 99th percentile {np.percentile(hidden, 99):.4f}), "
          f"{len(shown)} px in view (median red {np.median(shown):.3f})")
    assert np.percentile(hidden, 99) < 0.02 and np.median(shown) > 0.3


def test_head_solve_at_real_scale(tracked):
    """The other solve (the anchor follows the head, the camera stands still) at real scale: the landmarks
    still land on the track, and the face is about 0.15 m wide in the scene."""
    from portrait_relight import scene3d, sequencer

    sc, strip, folder = tracked
    # what Track builds from the worker's output, in the other mode (the worker itself ran in the fixture)
    scene3d.build_tracked_scene(sc, sequencer.strip_source(strip), str(folder), solve="HEAD", real_scale=True)
    anchor = sc.portrait_relight.anchor
    assert sc.camera.name == "Source Camera" and anchor.animation_data is not None
    assert 0.2 < anchor.scale[0] < 0.5
    assert scene3d.head_size_text(anchor).startswith("Real scale: 1 head unit = 0.3")
    errs = reprojection_px(sc, folder)
    assert np.median(errs, axis=1).max() <= 1.5 and errs.max() <= 1.5, errs.max()
    sc.frame_set(START + FIRST_SOURCE)
    head = bpy.data.objects["Tracked Head"]
    outline = np.array([head.matrix_world @ v.co for v in head.evaluated_get(
        bpy.context.evaluated_depsgraph_get()).data.vertices[:468]])
    width = float(np.ptp(outline @ np.array(anchor.matrix_world)[:3, 0] / anchor.scale[0]))
    assert 0.13 < width < 0.17, width


def test_a_cached_track_longer_than_the_strip_stays_in_step(tracked):
    """A strip showing part of what was tracked (a relight or Track of a longer range cached the analysis):
    the mesh cache, camera keys and plate are shifted so each timeline frame still shows its own source
    frame."""
    from portrait_relight import scene3d, sequencer

    sc, strip, folder = tracked
    movie = sequencer.strip_source(strip).input
    src = sequencer.StripSource(movie, (15, 25), 101, 10, "part")  # source 15..24 at timeline 101..110
    scene3d.build_tracked_scene(sc, src, str(folder))
    errs = reprojection_px(sc, folder, frames=(101, 105, 110), shift=101 - 15)
    assert errs.max() <= 1.5, errs.max()  # the lips too, which move between these frames
    assert sc.camera.data.background_images[0].clip.frame_start == 101 - 15


def test_track_cancel_builds_nothing(tracked, tmp_path):
    """Cancel (Esc / the Cancel button) during the analysis: the worker stops, the scene keeps what it had,
    no head mesh is written, and the panel says so."""
    import time

    from portrait_relight import scene3d

    sc, strip, _folder = tracked
    s = sc.portrait_relight
    old_out, s.output_dir = s.output_dir, str(tmp_path)  # nothing cached there: Track analyses again
    mesh_before = bpy.data.objects["Tracked Head"].data
    reports = []
    run = scene3d.TrackRun(bpy.context, strip, "CAMERA", False, lambda *report: reports.append(report))
    try:
        while run.tick(bpy.context):
            if run.job is not None and run.job.state.done >= 1:
                run.cancel()
            time.sleep(0.05)
    finally:
        run.close()
        s.output_dir = old_out
    assert run.result is None and "cancelled" in s.last_result and not s.is_running
    assert bpy.data.objects["Tracked Head"].data == mesh_before
    assert not (tmp_path / "talk" / "head_mesh.pc2").exists()


def test_scene3d_panel_draws_registered_props_and_operators(tracked):
    from types import SimpleNamespace

    from portrait_relight import scene3d
    from test_addon_blender import _CheckingLayout

    class Layout(_CheckingLayout):
        def operator(self, idname, **kw):
            super().operator(idname, **kw)
            return SimpleNamespace()  # the panel sets the operator's properties on it

    seen: list = []
    scene3d.draw_scene3d(Layout(seen), bpy.context)
    assert {"solve", "real_scale", "portrait_relight.track", "portrait_relight.setup_cg_composite",
            "portrait_relight.setup_pass_compositor"} <= set(seen)
