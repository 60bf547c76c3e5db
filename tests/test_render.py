"""Rendering: shading direction, novel-view re-projection of a textured sphere, shadows, compositing."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from relight_core import intrinsic, lights, render, skin, views

R_HEAD = 0.25  # sphere radius, head units
DIST = 2.7


def sphere_maps(size: int = 192, fov: float = 18.837):
    """A sphere of radius R_HEAD at (0, 0, -DIST) seen by a pinhole camera -> points, normals, mask, K."""
    f = 0.5 * size / math.tan(math.radians(fov) / 2)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    d = np.stack([(xx - size / 2) / f, -(yy - size / 2) / f, -np.ones_like(xx)], -1)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    c = np.array([0.0, 0.0, -DIST])
    b = d @ c
    disc = b * b - (c @ c - R_HEAD ** 2)
    mask = disc > 0
    t = b - np.sqrt(np.maximum(disc, 0))
    p = d * t[..., None]
    n = (p - c) / R_HEAD
    p[~mask] = 0
    n[~mask] = 0
    return p.astype(np.float32), n.astype(np.float32), mask, (f, f, size / 2, size / 2)


def test_light_from_the_right_brightens_the_right_side():
    _, n, mask, _ = sphere_maps(128)
    sh = np.zeros((9, 3))
    sh[0] = 1.0
    sh[3] = 0.8  # +X in the DPR frame = image right
    s = intrinsic.shade_image(intrinsic.cam_to_dpr_normals(n), sh, mask)
    w = s.shape[1]
    right = s[:, w // 2 + 10:][mask[:, w // 2 + 10:]].mean()
    left = s[:, :w // 2 - 10][mask[:, :w // 2 - 10]].mean()
    assert right > 1.5 * left


def test_orbit_reprojection_shows_the_rotated_surface():
    size = 160
    p, _, mask, k = sphere_maps(size)
    cam_from_head = np.eye(4)
    cam_from_head[:3, 3] = [0, 0, -DIST]
    plan = views.ViewPlan({"yaw": 20.0, "pitch": 0.0}, 1)
    new_from_input, kk, _ = plan.view(0, cam_from_head, k, (size, size))
    mx, my, cover, depth = render.reproject_maps(p, mask, new_from_input, kk, (size, size))
    head_x = (p[..., 0]).astype(np.float32)  # texture: head-space x of the surface point
    seen = render.sample(head_x, mx, my)
    c = size // 2
    # the camera moved toward +x: the image centre now shows the point at 20 degrees longitude
    assert abs(seen[c, c] - R_HEAD * math.sin(math.radians(20))) < 0.01
    # the silhouette of a sphere is the same disc: covered, no holes
    inner = mask & (cv_distance(mask) > 6)  # the limb crescent beyond the input silhouette is unknown
    assert cover[inner].min() > 0.9  # soft (anti-aliased) edge only near the limb
    assert abs(depth[c, c] - (DIST - R_HEAD)) < 0.02


def cv_distance(mask):
    import cv2

    return cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)


def test_pitch_moves_the_camera_up():
    size = 128
    p, _, mask, k = sphere_maps(size)
    cam_from_head = np.eye(4)
    cam_from_head[:3, 3] = [0, 0, -DIST]
    new_from_input, kk, _ = views.ViewPlan({"pitch": 15.0}, 1).view(0, cam_from_head, k, (size, size))
    mx, my, _, _ = render.reproject_maps(p, mask, new_from_input, kk, (size, size))
    seen = render.sample(p[..., 1].copy(), mx, my)
    assert seen[size // 2, size // 2] > 0.04  # looking down: the centre shows the upper part of the sphere


def test_cast_shadow_of_an_occluder():
    # a back plane at z=-3 and a small square at z=-2.8 in front of it; light from the camera (+z)
    xs = np.linspace(-0.4, 0.4, 60)
    gx, gy = np.meshgrid(xs, xs)
    back = np.stack([gx, gy, np.full_like(gx, -3.0)], -1).reshape(-1, 3)
    sq = (np.abs(gx) < 0.1) & (np.abs(gy) < 0.1)
    front = np.stack([gx[sq], gy[sq], np.full(sq.sum(), -2.8)], -1)
    pts = np.concatenate([back, front]).astype(np.float32)
    to_light = np.broadcast_to(np.array([0, 0, 1.0], np.float32), pts.shape)
    vis = skin.soft_shadow_visibility(pts, to_light[:1], None, res=64, bias=0.01)
    vb = vis[: len(back)].reshape(gx.shape)
    assert vb[sq & (np.abs(gx) < 0.07) & (np.abs(gy) < 0.07)].max() == 0.0
    assert vb[(np.abs(gx) > 0.2) | (np.abs(gy) > 0.2)].min() == 1.0
    assert vis[len(back):].min() == 1.0


def test_key_light_specular_peaks_at_the_mirror_direction():
    size = 96
    p, n, mask, _ = sphere_maps(size)

    class Sun:
        direction = np.array([0.0, -1.0, 0.0])  # DPR -Y = toward the viewer
        color = (1.0, 1.0, 1.0)
        strength = 2.0

    diffuse, spec = render.key_light_terms(n, p, mask, [Sun()], np.eye(3), np.array([0, 0, -DIST]),
                                           np.zeros(3), shadows=True)
    peak = np.unravel_index(np.argmax(spec[..., 0]), mask.shape)
    assert abs(peak[0] - size / 2) <= 2 and abs(peak[1] - size / 2) <= 2
    # a convex sphere lit from the camera casts no shadow on itself: the diffuse is Lambert's, unshadowed
    lambert = 2.0 * np.maximum(n[..., 2], 0.0)
    assert np.abs(diffuse[..., 0] - lambert)[mask].max() < 1e-4


def test_distant_point_light_matches_the_directional_one():
    """A point light far away along a direction, with the power that gives the same irradiance at the
    head, shades and shadows like a directional light from there (both key-light paths, same maths)."""
    size = 96
    p, n, mask, _ = sphere_maps(size)
    head = np.array([0.0, 0.0, -DIST])
    d = np.array([0.6, -0.64, 0.48])  # DPR: right, toward the viewer, above
    d /= np.linalg.norm(d)

    class Sun:
        direction = d
        color = (1.0, 0.8, 0.6)
        strength = 2.0

    far = 1000.0
    point = lights.PointLight(position=d * far, color=Sun.color, power=Sun.strength * 4 * np.pi * far ** 2)
    sun = render.key_light_terms(n, p, mask, [Sun()], np.eye(3), head, np.zeros(3))
    pt = render.key_light_terms(n, p, mask, [point], np.eye(3), head, np.zeros(3))
    assert np.abs(sun[1] - pt[1]).max() < 1e-3 * sun[1].max() and sun[1].max() > 0.05  # the highlight
    # the same diffuse light (shadow maps of the two kinds differ by a cell at the terminator)
    assert np.abs(sun[0] - pt[0]).max() < 1e-2 * Sun.strength


def test_composite_keep_and_transparent():
    rgb = np.full((4, 4, 3), 0.8, np.float32)
    plate = np.zeros((4, 4, 3), np.float32)
    a = np.zeros((4, 4), np.float32)
    a[1:3, 1:3] = 1.0
    keep = render.composite(rgb, a, plate)
    assert keep[..., 3].min() == 1.0 and keep[0, 0, 0] == 0.0 and keep[1, 1, 0] == np.float32(0.8)
    tr = render.composite(rgb, a, None)
    assert tr[0, 0, 3] == 0.0 and tr[1, 1, 3] == 1.0


def _striped_plate_and_disc(size: int = 256, radius: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A plate of vertical stripes (period 16 px, 0.2 / 0.6) on a colour ramp, a person disc of `radius`
    in the middle, and each pixel's distance from the disc's edge (> 0 outside)."""
    x = np.arange(size, dtype=np.float32)
    stripes = np.where((x // 8) % 2 == 0, 0.2, 0.6).astype(np.float32)
    ramp = np.tile(x / size, (size, 1)).T
    plate = np.stack([np.tile(stripes, (size, 1)), ramp, np.full((size, size), 0.3)], axis=-1)
    plate = plate.astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    dist = np.hypot(xx - size / 2, yy - size / 2) - radius
    return plate, (dist < 0).astype(np.float32), dist


def test_background_fill_continues_the_plate_texture_at_the_hole_edge():
    """A novel view uncovers a band just inside the old silhouette: it should carry the plate's texture
    there (a smooth patch in the silhouette's shape shows as a halo), turn smooth deep inside, and leave
    the plate untouched away from the person."""
    plate, alpha, dist = _striped_plate_and_disc()
    bg = render.inpaint_background(plate, alpha)
    assert np.isfinite(bg).all() and bg.min() >= 0.0 and bg.max() <= 1.0
    far = dist > 28  # the matte grown by 9 px, then feathered
    assert np.array_equal(bg[far], plate[far])

    def detail(img: np.ndarray) -> np.ndarray:
        return img[..., 0] - cv2.GaussianBlur(img[..., 0], (0, 0), 6.0)
    band = (dist > -12) & (dist < -4)  # measured 0.40 of the plate's detail (a smooth fill: 0.01)
    assert np.abs(detail(bg)[band]).mean() > 0.3 * np.abs(detail(plate)[band]).mean()
    centre = dist < -45
    assert np.abs(detail(bg)[centre]).mean() < 0.05 * np.abs(detail(plate)[centre]).mean()
    flat = np.full_like(plate, 0.37)
    assert np.allclose(render.inpaint_background(flat, alpha), 0.37, atol=1e-5)


def test_background_fill_without_anything_to_fill_from():
    plate, _, _ = _striped_plate_and_disc(64)
    full = np.ones((64, 64), np.float32)
    assert np.array_equal(render.inpaint_background(plate, full), plate)
    assert np.array_equal(render.inpaint_background(plate, np.zeros_like(full)), plate)


def test_edge_decontamination_recovers_the_foreground_colour():
    """At the matte's soft edge the input mixes person and background; a novel view stretches that edge,
    so its colour is solved from the matting equation (here exactly, from alpha 0.25 up)."""
    alpha = np.tile(np.linspace(0.0, 1.0, 41, dtype=np.float32), (3, 1))
    fore, back = np.array([0.2, 0.1, 0.05], np.float32), np.array([0.9, 0.8, 0.95], np.float32)
    img = alpha[..., None] * fore + (1 - alpha[..., None]) * back
    relit = 0.5 * img  # some new light: half as bright
    before = relit.copy()
    render.decontaminate_edge(relit, img, alpha, np.broadcast_to(back, img.shape).copy())
    solved = (alpha >= render.EDGE_ALPHA_MIN) & (alpha < 0.98)
    assert np.allclose(relit[solved], 0.5 * fore, atol=1e-5)
    untouched = (alpha <= 0.02) | (alpha >= 0.98)
    assert np.array_equal(relit[untouched], before[untouched])
    weak = (alpha > 0.02) & (alpha < render.EDGE_ALPHA_MIN)  # partly: noise would grow as 1 / alpha
    assert (relit[weak][:, 0] < before[weak][:, 0]).all()


def test_exposure_scale_matches_mean_irradiance():
    a = np.zeros((9, 3))
    a[0] = 1.0
    b = a * 3.0
    assert abs(render.exposure_scale(a, b) - 1 / 3) < 1e-6


def test_head_light_space_turns_with_the_head():
    ang = math.radians(30)
    r = np.array([[math.cos(ang), 0, math.sin(ang)], [0, 1, 0], [-math.sin(ang), 0, math.cos(ang)]])
    cfh = np.eye(4)
    cfh[:3, :3] = r
    rot = render.light_rotation(cfh, "head")
    # head +z (out of the face) in DPR is -Y; after the head turns it points along the turned face
    face_dir_cam = r @ np.array([0, 0, 1.0])
    expected = render.CAM_TO_DPR @ face_dir_cam
    assert np.allclose(rot @ np.array([0, -1.0, 0]), expected, atol=1e-9)
    assert np.allclose(render.light_rotation(cfh, "world"), np.eye(3))


def test_coarse_splat_matches_the_full_one():
    size = 160
    p, _, mask, k = sphere_maps(size)
    cam_from_head = np.eye(4)
    cam_from_head[:3, 3] = [0, 0, -DIST]
    new_from_input, kk, _ = views.ViewPlan({"yaw": 15.0, "pitch": 5.0}, 1).view(0, cam_from_head, k,
                                                                                    (size, size))
    full = render.reproject_maps(p, mask, new_from_input, kk, (size, size), step=1)
    coarse = render.reproject_maps(p, mask, new_from_input, kk, (size, size), step=2)
    both = (full[2] > 0.99) & (coarse[2] > 0.99)
    assert both.sum() > 0.9 * (full[2] > 0.99).sum()
    assert np.median(np.abs(full[0][both] - coarse[0][both])) <= 1.0  # the coarse grid sees less detail
    assert np.median(np.abs(full[1][both] - coarse[1][both])) <= 1.0


def pinhole_rays(size: int, fov: float = 18.837):
    """Rays (size, size, 3) through the pixel centres of a pinhole camera (z = -1) and (fx, fy, cx, cy)."""
    f = 0.5 * size / math.tan(math.radians(fov) / 2)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    rays = np.stack([(xx - size / 2) / f, -(yy - size / 2) / f, -np.ones_like(xx)], -1)
    return rays, (f, f, size / 2, size / 2)


def orbit(yaw: float, pitch: float, k, size: int):
    """new_from_input and K of an orbit about a head centre DIST in front of the input camera."""
    cam_from_head = np.eye(4)
    cam_from_head[:3, 3] = [0, 0, -DIST]
    new_from_input, kk, _ = views.ViewPlan({"yaw": yaw, "pitch": pitch}, 1).view(0, cam_from_head, k,
                                                                                     (size, size))
    return new_from_input, kk


def project(points, new_from_input, kk):
    """Input-camera points (N, 3) -> pixel-index coordinates (N, 2) in the new camera (centres: integers)."""
    q = np.c_[points, np.ones(len(points))] @ np.asarray(new_from_input).T
    fx, fy, cx, cy = kk
    return np.stack([fx * q[:, 0] / -q[:, 2] + cx - 0.5, cy - fy * q[:, 1] / -q[:, 2] - 0.5], 1)


def square_over_plane(size: int, near: float = 2.4, far: float = 3.0, half: float = 0.12):
    """A green square (half-size `half`, depth `near`) in front of a red plane (depth `far`) filling the view
    -> points, texture (size, size, 3), K."""
    rays, k = pinhole_rays(size)
    square = (np.abs(rays[..., 0] * near) < half) & (np.abs(rays[..., 1] * near) < half)
    depth = np.where(square, near, far)
    texture = np.zeros((size, size, 3), np.float32)
    texture[..., 0] = 1.0
    texture[square] = (0.0, 1.0, 0.0)
    return (rays * depth[..., None]).astype(np.float32), texture, k


@pytest.mark.parametrize("size, step, yaw", [(160, 1, 20.0), (160, 1, -25.0), (400, 2, 25.0)])
def test_disocclusion_shows_the_surface_behind(size, step, yaw):
    near, far, half = 2.4, 3.0, 0.12
    points, texture, k = square_over_plane(size, near, far, half)
    new_from_input, kk = orbit(yaw, 0.0, k, size)
    mx, my, cover, depth = render.reproject_maps(points, np.ones((size, size), bool), new_from_input, kk,
                                                 (size, size), step=step)
    seen = render.sample(texture, mx, my)
    corners = np.array([[x, y, -near] for x in (-half, half) for y in (-half, half)])
    square = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(square, cv2.convexHull(project(corners, new_from_input, kk).astype(np.float32))
                       .astype(np.int32), 1)
    beside = cv2.dilate(square, np.ones((5, 5), np.uint8)) == 0  # not the square nor its edge pixels
    # the gap the square opens beside itself shows the red plane behind it, not green smeared from the
    # square's edge (interpolated coordinates), nor colours read from between its two sides
    assert (seen[..., 1] > 0.1)[beside].sum() <= 0.02 * square.sum()
    assert depth[beside & (cover > 0.5)].min() > far - 0.2  # and it lies at the plane's depth
    assert (seen[..., 1] > 0.5)[square > 0].mean() > 0.9  # the square itself is still there


def test_a_rim_turned_toward_the_camera_is_resampled_smoothly():
    """Turning toward a sphere's limb stretches it several times: the source coordinates there must run
    on smoothly (cracks from their neighbours, strongly stretched triangles rasterised), not alternate
    between exact point hits and push-pull's fill of the gaps between them (a speckled edge, a mosaic of
    2x2 blocks at step 2: mean |second difference| 2.7 px, max 14 px with push-pull alone)."""
    size = 160
    p, _, mask, k = sphere_maps(size)
    new_from_input, kk = orbit(-30.0, 0.0, k, size)
    mx, _, cover, _ = render.reproject_maps(p, mask, new_from_input, kk, (size, size), step=1)
    inside = cover > 0.99
    run = inside[:, 2:] & inside[:, 1:-1] & inside[:, :-2]
    cols = np.flatnonzero(inside.any(axis=0))
    rim = np.zeros_like(run)
    rim[:, :cols.min() + (cols.max() - cols.min()) // 4] = True  # the quarter the camera turned toward
    rough = np.abs(np.diff(mx, 2, axis=1))[run & rim]
    assert rough.mean() < 0.6 and rough.max() < 6.0, (rough.mean(), rough.max())  # measured 0.23, 4.3
    u, v, z, idx, shape, fx = _projected_sphere(size, new_from_input, kk)
    x, y, depth, cell = render._stretched_samples(u, v, z, idx, idx, shape, fx, (size, size))
    assert cell.size > 0 and np.isfinite(np.c_[x, y, depth]).all()
    assert render._stretched_samples(u, v, z, idx[:0], idx, shape, fx, (size, size))[3].size == 0


def _projected_sphere(size: int, new_from_input, kk):
    """The sphere's source pixels projected into the new view -> (u, v, z, idx, shape, fx)."""
    p, _, mask, _ = sphere_maps(size)
    idx = np.flatnonzero(mask.reshape(-1))
    pts = p.reshape(-1, 3)[idx]
    uv = project(pts, new_from_input, kk) + 0.5  # `project` puts pixel centres at integers
    z = -(np.c_[pts, np.ones(idx.size)] @ np.asarray(new_from_input)[2])
    return uv[:, 0], uv[:, 1], z, idx, mask.shape, kk[0]


def disc_edge_offsets(alpha, centre, radius, angles):
    """Signed distance (px, + outside) from the true edge radius(angle) to where alpha first drops below 0.5
    walking outward from the centre, along each ray at `angles` (N,) -> (N,)."""
    steps = np.arange(-5.0, 5.0, 0.02)
    r = radius[:, None] + steps[None, :]
    px = (centre[0] + r * np.cos(angles)[:, None]).astype(np.float32)
    py = (centre[1] + r * np.sin(angles)[:, None]).astype(np.float32)
    profile = cv2.remap(alpha.astype(np.float32), px, py, cv2.INTER_LINEAR)
    first = np.argmax(profile < 0.5, axis=1)
    a, b = profile[np.arange(len(angles)), first - 1], profile[np.arange(len(angles)), first]
    return steps[first - 1] + (a - 0.5) / (a - b) * 0.02


def test_reprojected_silhouette_is_smooth_and_in_place():
    # a flat disc with a soft matte (4 px ramp); as in the pipeline the surface is where alpha > 0.5
    size, radius = 512, 0.2
    rays, k = pinhole_rays(size)
    points = (rays * DIST).astype(np.float32)
    r_px = np.hypot(rays[..., 0], rays[..., 1]) * k[0]
    alpha = np.clip(0.5 + (radius / DIST * k[0] - r_px) / 4.0, 0, 1).astype(np.float32)
    new_from_input, kk = orbit(20.0, 10.0, k, size)
    mx, my, cover, _ = render.reproject_maps(points, alpha > 0.5, new_from_input, kk, (size, size), step=2)
    out_alpha = render.sample(alpha, mx, my) * cover  # as FrameRenderer._render builds it
    phi = np.linspace(0, 2 * np.pi, 4000, endpoint=False)
    edge = project(np.stack([radius * np.cos(phi), radius * np.sin(phi), np.full_like(phi, -DIST)], 1),
                   new_from_input, kk)
    centre = edge.mean(axis=0)
    ang = np.arctan2(edge[:, 1] - centre[1], edge[:, 0] - centre[0])
    order = np.argsort(ang)
    angles = np.linspace(-np.pi, np.pi, 720, endpoint=False)  # about 1 px apart along the edge
    true_r = np.interp(angles, ang[order], np.hypot(*(edge - centre).T)[order], period=2 * np.pi)
    dev = disc_edge_offsets(out_alpha, centre, true_r, angles)
    assert abs(dev.mean()) < 0.4  # neither grown nor shrunk
    assert np.percentile(np.abs(dev), 95) < 1.5  # near the true edge all along (the old splat: 2 px off)
    assert np.std(np.diff(dev, 2)) < 0.25  # smooth along the edge: no stair steps of the half-res splat
    ramp = out_alpha[(out_alpha > 0.02) & (out_alpha < 0.98)]
    assert ramp.size > 0.5 * len(angles)  # anti-aliased: intermediate values all along the edge


def test_coordinates_address_the_source_to_a_fraction_of_a_pixel():
    # a plane at the head centre seen from an orbit: the exact source pixel of every output pixel is known
    size = 400
    rays, k = pinhole_rays(size)
    new_from_input, kk = orbit(15.0, 5.0, k, size)
    mx, my, cover, _ = render.reproject_maps((rays * DIST).astype(np.float32), np.ones((size, size), bool),
                                             new_from_input, kk, (size, size), step=2)
    out_rays, _ = pinhole_rays(size)
    inv = np.linalg.inv(new_from_input)
    d = out_rays @ inv[:3, :3].T
    hit = inv[:3, 3] + d * ((-DIST - inv[2, 3]) / d[..., 2])[..., None]  # on the plane z = -DIST
    sx, sy = hit[..., 0] / DIST * k[0] + k[2] - 0.5, -hit[..., 1] / DIST * k[1] + k[3] - 0.5
    inner = cover > 0.99
    m = size // 8
    inner[:m] = inner[-m:] = False
    inner[:, :m] = inner[:, -m:] = False
    err = np.hypot(mx - sx, my - sy)[inner]
    assert np.median(err) < 0.1 and np.percentile(err, 95) < 0.3  # not the splat cell's whole pixel


def test_specular_mask_spares_hair_over_the_skin() -> None:
    """Key-light specular goes on skin-like albedo and the lips, not on darker hair the face mesh covers."""
    labels = np.zeros((40, 40), np.uint8)
    labels[5:35, 5:35] = 1
    labels[28:32, 15:25] = 4
    albedo = np.zeros((40, 40, 3), np.float32)
    albedo[labels > 0] = (0.6, 0.45, 0.35)  # skin
    albedo[5:12, 5:35] = (0.12, 0.08, 0.05)  # a fringe of dark hair, labelled skin
    albedo[28:32, 15:25] = (0.35, 0.15, 0.12)  # lips: darker, still specular
    m = render.specular_mask(albedo, labels)
    assert m.shape == (40, 40) and m.dtype == np.float32
    assert m[20, 20] > 0.99 and m[8, 20] < 0.01 and m[30, 20] > 0.99 and m[2, 2] == 0.0


def test_shadow_stipple_is_smoothed_but_shadows_and_mask_edges_stay() -> None:
    h, w = 40, 60
    yy, xx = np.mgrid[0:h, 0:w]
    inside = (xx >= 5) & (xx < 55)
    idx = np.flatnonzero(inside)
    vis = np.where(xx < 30, ((xx + yy) % 2).astype(np.float32), 0.0)[inside]  # stipple | a solid shadow
    out = render._smooth_on_grid(vis.astype(np.float32), idx, (h, w))
    grid = np.full(h * w, np.nan, np.float32)
    grid[idx] = out
    grid = grid.reshape(h, w)
    assert np.abs(grid[10:30, 10:25] - 0.5).max() < 0.05  # the stipple becomes its mean
    assert grid[10:30, 36:55].max() < 0.01  # a solid shadow stays dark, up to the mask's own edge


def turned_face(yaw: float, size: int = 256):
    """The neutral face seen by an orbit camera at `yaw` (radius 3.5, 30 deg FOV) -> (vertices (478, 3),
    faces, vertex normals, cam_from_head, K (3, 3), the input depth map (size, size))."""
    from relight_core import camera as cam
    from relight_core import face_model, geometry

    k = cam.k_matrix(cam.intrinsics_from_fov(30.0, size, size))
    cfh = cam.invert_pose(cam.orbit_cam2head(yaw, 0.0, 0.0, radius=3.5))
    verts = cam.transform_points(cfh, face_model.neutral_face())
    tris, vn = geometry.face_surface(verts)
    depth, _ = geometry.render_mesh(verts, tris, k, size, size, normals=vn).dense()
    return verts, tris, vn, cfh, k, depth


@pytest.mark.parametrize("yaw", [40.0, -40.0])
def test_mirror_fill_textures_the_unseen_cheek_from_the_other_side(yaw: float) -> None:
    """A face turned by 40 degrees, seen from the front: the cheek the nose hid takes the texture of its
    mirror image, i.e. source pixels that show the mirrored point of the face."""
    from relight_core import camera as cam

    size = 256
    verts, tris, vn, cfh, k, depth_in = turned_face(yaw, size)
    new_from_input = cam.invert_pose(cam.orbit_cam2head(0.0, 0.0, 0.0, radius=3.5)) @ cam.invert_pose(cfh)
    kk = (k[0, 0], k[1, 1], k[0, 2], k[1, 2])
    fill = render.mirror_fill(verts, tris, vn, new_from_input, k, kk, (size, size), depth_in,
                              np.zeros((size, size), np.float32))
    full = fill.weight >= 1.0
    assert full.sum() > 200
    side = np.sign(fill.xs[full] + 0.5 - size / 2)  # the frontal view's symmetry plane is the middle column
    assert abs(side.mean()) > 0.95  # all on the side the turn hid
    # where each source pixel's surface point lands in the frontal view: at the mirrored pixel
    src = np.stack([fill.src_x[full] + 0.5, fill.src_y[full] + 0.5], 1)
    d = depth_in[fill.src_y[full].round().astype(int), fill.src_x[full].round().astype(int)]
    lands = cam.project(cam.transform_points(new_from_input, cam.unproject(src, d, k)), kk)
    assert np.median(np.abs(lands[:, 0] - (size - (fill.xs[full] + 0.5)))) < 1.0
    assert np.median(np.abs(lands[:, 1] - (fill.ys[full] + 0.5))) < 1.0


def test_mirror_fill_leaves_a_well_seen_face_alone() -> None:
    from relight_core import camera as cam

    size = 256
    verts, tris, vn, cfh, k, depth_in = turned_face(0.0, size)
    new_from_input = cam.invert_pose(cam.orbit_cam2head(10.0, 5.0, 0.0, radius=3.5)) @ cam.invert_pose(cfh)
    kk = (k[0, 0], k[1, 1], k[0, 2], k[1, 2])
    fill = render.mirror_fill(verts, tris, vn, new_from_input, k, kk, (size, size), depth_in,
                              np.zeros((size, size), np.float32))
    face_px = (depth_in > 0).sum()
    assert fill.weight.sum() < 0.01 * face_px


def test_a_lone_point_from_another_surface_is_dropped_from_the_splat() -> None:
    """A surface's splat (source coordinates continuous) with one cell won by a point from far away in the
    source (a grazing point of another surface) and a step edge to a second surface: only the lone
    point goes."""
    h, w = 40, 40
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    coords = np.stack([xx * 1.3, yy * 0.8, np.ones_like(xx)], -1)
    coords[:, 25:, 0] += 30.0  # a second surface (an occluder's edge): continuous on its own side
    coords[12, 10, :2] = (70.0, 3.0)  # the lone point
    hit = np.ones((h, w), bool)
    hit[30:, :5] = False  # and some holes
    before = hit.copy()
    render._drop_flying(hit, coords)
    assert not hit[12, 10]
    hit[12, 10] = True
    assert (hit == before).all()


def test_a_view_equal_to_the_input_camera_is_the_input_view():
    """An absolute camera that is the input camera (e.g. an orbit rig's first frame) renders as the input
    view, without re-projection; a camera turned by 0.5 degrees is a novel view."""
    cam_from_head = np.eye(4)
    cam_from_head[:3, 3] = (0.02, -0.05, -2.7)
    k_in = (600.0, 600.0, 256.0, 256.0)
    fov = np.degrees(2 * np.arctan(0.5 * 512 / 600.0))
    c2h = np.linalg.inv(cam_from_head)
    same = views.ViewPlan({"fov_deg": fov, "cam2head": c2h}, 1)
    assert same.view(0, cam_from_head, k_in, (512, 512)) is None
    new_from_input = views.ViewPlan({"yaw": 0.5}, 1).view(0, cam_from_head, k_in, (512, 512))[0]
    turned = views.ViewPlan({"fov_deg": fov, "cam2head": c2h @ np.linalg.inv(new_from_input)}, 1)
    assert turned.view(0, cam_from_head, k_in, (512, 512)) is not None
