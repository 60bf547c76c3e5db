"""camera.py: orbit views, angle round trips, intrinsics, projections and frame conversions."""

from __future__ import annotations

import numpy as np
import pytest

from relight_core import camera as cam


def test_canonical_view_looks_at_origin_from_radius() -> None:
    m = cam.canonical_cam2head()
    assert np.allclose(m[:3, 3], [0, 0, cam.CANONICAL_RADIUS])
    assert np.allclose(m[:3, :3], np.eye(3))
    assert cam.CANONICAL_RADIUS == 2.7 and cam.CANONICAL_FOV_DEG == pytest.approx(18.837)


@pytest.mark.parametrize("yaw,pitch,roll", [(30, 0, 0), (-45, 10, 0), (10, -20, 15), (170, 60, -30)])
def test_orbit_looks_at_origin_and_round_trips(yaw: float, pitch: float, roll: float) -> None:
    m = cam.orbit_cam2head(yaw, pitch, roll, radius=3.0)
    assert np.linalg.norm(m[:3, 3]) == pytest.approx(3.0)
    # the viewing direction (-z of the camera) points from the camera to the origin
    assert np.allclose(-m[:3, 2], -m[:3, 3] / 3.0)
    assert np.allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3)) and np.linalg.det(m[:3, :3]) == pytest.approx(1)
    # the origin projects to the image centre
    k = cam.intrinsics_from_fov(20.0, 640, 480)
    c = cam.project(cam.transform_points(cam.invert_pose(m), np.zeros(3)), k)
    assert np.allclose(c, [320, 240])
    assert np.allclose(cam.cam2head_to_yaw_pitch_roll(m), (yaw, pitch, roll))


def test_orbit_sign_conventions() -> None:
    right = cam.orbit_cam2head(30, 0)
    assert right[0, 3] > 0  # yaw > 0: camera toward head +x
    up = cam.orbit_cam2head(0, 20)
    assert up[1, 3] > 0 and up[2, 1] < 0  # pitch > 0: above, looking down (view dir has -y)
    rolled = cam.orbit_cam2head(0, 0, 10)
    # a point on the head's +x axis appears rotated clockwise (down) in the image when roll > 0
    k = cam.intrinsics_from_fov(18.837, 512, 512)
    p = cam.project(cam.transform_points(cam.invert_pose(rolled), [0.2, 0, 0]), k)
    assert p[0] > 256 and p[1] > 256


def test_intrinsics_round_trip_and_project_unproject() -> None:
    fx, fy, cx, cy = cam.intrinsics_from_fov(30.0, 640, 360)
    assert (cx, cy) == (320.0, 180.0) and fx == fy
    assert cam.fov_from_intrinsics(fy, 360) == pytest.approx(30.0)
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(50, 3)) * 0.3 + [0, 0, -3]
    px = cam.project(pts, (fx, fy, cx, cy))
    back = cam.unproject(px, -pts[:, 2], cam.k_matrix((fx, fy, cx, cy)))
    assert np.allclose(back, pts)
    # +y up in cam space is toward row 0
    assert cam.project(np.array([0, 0.1, -2.0]), (fx, fy, cx, cy))[1] < cy


def test_frame_conversions() -> None:
    rng = np.random.default_rng(1)
    v = rng.normal(size=(20, 3))
    assert np.allclose(cam.dpr_to_head(cam.head_to_dpr(v)), v)
    assert np.allclose(cam.dpr_to_cam(cam.cam_to_dpr(v)), v)
    # head +z (toward the viewer) is DPR -Y; head +y (up) is DPR +Z
    assert np.allclose(cam.head_to_dpr([0, 0, 1]), [0, -1, 0])
    assert np.allclose(cam.head_to_dpr([0, 1, 0]), [0, 0, 1])
    # Blender anchor local: X = head x, Z = head y, -Y = head z; local frame == DPR frame (frontal)
    assert np.allclose(cam.blender_local_to_head([0, -1, 0]), [0, 0, 1])
    assert np.allclose(cam.blender_local_to_head([0, 0, 1]), [0, 1, 0])
    assert np.allclose(cam.blender_local_to_head(v), cam.dpr_to_head(v))
    assert np.allclose(cam.head_to_blender_local(cam.blender_local_to_head(v)), v)


def test_blender_camera_matrix_becomes_cam2head() -> None:
    # Blender front view: a camera at local (0, -2.7, 0) rotated 90 deg about X looks along +Y at the anchor
    c = np.cos(np.pi / 2)
    cam_local = np.array([[1, 0, 0, 0], [0, c, -1, -2.7], [0, 1, c, 0], [0, 0, 0, 1]], dtype=float)
    m = cam.blender_local_to_head(cam_local)
    assert np.allclose(m, cam.canonical_cam2head(), atol=1e-9)
    assert np.allclose(cam.head_to_blender_local(m), cam_local)
    side = cam.blender_local_to_head(cam.head_to_blender_local(cam.orbit_cam2head(40, 10, 5)))
    assert np.allclose(side, cam.orbit_cam2head(40, 10, 5))


def test_rotvec_and_eg3d() -> None:
    r = cam.rot_y(25) @ cam.rot_x(-10) @ cam.rot_z(5)
    assert np.allclose(cam.rotvec_to_matrix(cam.matrix_to_rotvec(r)), r)
    assert cam.rotation_angle_deg(np.eye(3), cam.rot_z(33)) == pytest.approx(33)
    assert np.allclose(cam.orthonormalize(r + 1e-4), r, atol=1e-3)
    # an EG3D frontal camera (OpenCV axes) at +z looking at the origin is the canonical view
    eg = np.diag([1.0, -1.0, -1.0, 1.0])
    eg[2, 3] = 2.7
    assert np.allclose(cam.eg3d_cam2world_to_cam2head(eg.reshape(-1)), cam.canonical_cam2head())
