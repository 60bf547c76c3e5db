"""Temporal consistency: so that the relit output does not flicker more than the input does.

Two small stateful filters, each with an explicit `reset()`:
- `SHSmoother`: a One-Euro filter (Casiez et al. 2012) on the 27 RGB SH coefficients of the estimated
  input light: strong smoothing while the light is steady, little lag when it really changes.
- `FlowStabilizer`: blends the current frame's albedo with the previous stabilised albedo warped along the
  backward optical flow of the input (OpenCV DIS, computed at reduced resolution), weighted by a
  photometric occlusion check (the warped previous input must match the current input), so that moving
  or newly visible parts (mouth opening, disocclusions) take the current albedo.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


class SHSmoother:
    """One-Euro filter on an SH light (9, 3) (any array shape, filtered as one vector).

    min_cutoff (Hz): cutoff at rest; beta: cutoff increase per unit of speed (coefficient units / s);
    fps: frame rate of the frames fed to `__call__`.
    """

    def __init__(self, fps: float = 25.0, min_cutoff: float = 0.4, beta: float = 0.5,
                 d_cutoff: float = 1.0) -> None:
        self.fps, self.min_cutoff, self.beta, self.d_cutoff = float(fps), min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        """Forget the past (e.g. on a cut, or when a run starts)."""
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff: float, dt: float) -> float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Filter the next value -> the smoothed value (same shape, float32)."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            return x.astype(np.float32)
        dt = 1.0 / self.fps
        dx = (x - self._x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self._dx = self._dx + a_d * (dx - self._dx)
        speed = float(np.linalg.norm(self._dx)) / math.sqrt(x.size)
        a = self._alpha(self.min_cutoff + self.beta * speed, dt)
        self._x = self._x + a * (x - self._x)
        return self._x.astype(np.float32)


def to_gray8(image: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Linear RGB (H, W, 3) -> uint8 grey with a gamma of 1/2.2 (perceptual), optionally resized by scale.

    When resizing, the colour image is area-averaged first (fewer pixels for the luma and gamma passes).
    """
    img = np.ascontiguousarray(image, dtype=np.float32)
    if scale != 1.0:
        h, w = img.shape[:2]
        img = cv2.resize(img, (max(int(round(w * scale)), 8), max(int(round(h * scale)), 8)),
                         interpolation=cv2.INTER_AREA)
    luma = cv2.transform(img, np.asarray(LUMA, np.float32).reshape(1, 3))
    g = np.sqrt(np.clip(luma, 0.0, 1.0))  # ~gamma 2: cheap and close enough for flow
    return cv2.convertScaleAbs(g, alpha=255.0)


def dis_flow(gray_from: np.ndarray, gray_to: np.ndarray, preset: int | None = None) -> np.ndarray:
    """Dense optical flow (OpenCV DIS) -> (h, w, 2) float32 pixels: gray_from(x) ~ gray_to(x + flow(x))."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST if preset is None else preset)
    return dis.calc(gray_from, gray_to, None)


def upscale_flow(flow: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a flow field (h, w, 2) to (height, width, 2), scaling the vectors accordingly."""
    h, w = flow.shape[:2]
    if (h, w) == (height, width):
        return flow
    up = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
    up[..., 0] *= width / w
    up[..., 1] *= height / h
    return up


class FlowStabilizer:
    """Flow-guided recursive filter for per-pixel maps (the albedo).

    strength: weight of the warped previous result where the occlusion check passes (0 = off);
    flow_scale: resolution factor for the DIS flow; tol: grey-level tolerance (0..1, gamma-encoded) of the
    photometric occlusion check.
    """

    def __init__(self, strength: float = 0.6, flow_scale: float = 0.5, tol: float = 0.05) -> None:
        self.strength, self.flow_scale, self.tol = strength, flow_scale, tol
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._grids: dict[tuple, object] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame."""
        self._prev_gray: np.ndarray | None = None
        self._prev_map: np.ndarray | None = None
        self._prev_valid: np.ndarray | None = None

    def _grid(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        key = (h, w)
        if key not in self._grids:
            self._grids[key] = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        return self._grids[key]

    def _grid2(self, h: int, w: int) -> np.ndarray:
        """Pixel coordinates (h, w, 2) float32 (x, y), cached: the identity map of cv2.remap."""
        key = (h, w, 2)
        if key not in self._grids:
            gx, gy = self._grid(h, w)
            self._grids[key] = cv2.merge([gx, gy])
        return self._grids[key]

    def __call__(self, value: np.ndarray, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Stabilise `value` (H, W, C) float32 of the current frame.

        image: (H, W, 3) linear input frame (drives the flow and the occlusion check); valid: (H, W) bool,
        where `value` is meaningful (inside the person). Returns the stabilised (H, W, C) map (a new array).
        """
        h, w = value.shape[:2]
        gray = to_gray8(image, self.flow_scale)
        out = value
        if self.strength > 0 and self._prev_gray is not None and self._prev_gray.shape == gray.shape \
                and self._prev_map is not None and self._prev_map.shape == value.shape:
            flow = self._dis.calc(gray, self._prev_gray, None)
            gh, gw = gray.shape
            # remap with (H, W, 2) maps: base grid + flow in one add
            prev_w = cv2.remap(self._prev_gray, self._grid2(gh, gw) + flow, None, cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
            # photometric occlusion check at flow resolution, then the weight of the past
            diff = cv2.absdiff(gray, prev_w).astype(np.float32) * np.float32(1.0 / (255.0 * self.tol))
            conf = np.exp(-diff * diff) * np.float32(self.strength)
            mxy = self._grid2(h, w) + upscale_flow(flow, h, w)
            warped = cv2.remap(self._prev_map, mxy, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            pv = cv2.remap(self._prev_valid, mxy, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
            if (gh, gw) != (h, w):
                conf = cv2.resize(conf, (w, h), interpolation=cv2.INTER_LINEAR)
            wgt = conf * (pv & np.asarray(valid, dtype=bool).view(np.uint8)).astype(np.float32)
            if warped.ndim == 3:
                wgt = cv2.merge([wgt] * warped.shape[2])
            out = cv2.subtract(warped, value)
            out = cv2.multiply(out, wgt)
            out = cv2.add(out, value)
        self._prev_gray = gray
        self._prev_map = np.ascontiguousarray(out, dtype=np.float32)
        self._prev_valid = valid.astype(np.uint8)  # 0/1
        return out
