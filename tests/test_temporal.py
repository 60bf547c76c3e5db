"""Temporal filters: the SH One-Euro smoother and the flow-guided albedo stabiliser."""

from __future__ import annotations

import numpy as np

from relight_core import temporal


def test_sh_smoother_reduces_jitter_and_follows_a_step():
    rng = np.random.default_rng(0)
    f = temporal.SHSmoother(fps=30)
    base = np.zeros((9, 3))
    base[0] = 1.0
    noisy = [base + 0.05 * rng.normal(size=(9, 3)) for _ in range(60)]
    out = np.array([f(x) for x in noisy])
    assert np.std(out[20:], axis=0).mean() < 0.4 * np.std(np.array(noisy)[20:], axis=0).mean()
    step = base.copy()
    step[3] = 1.0
    for _ in range(30):
        y = f(step)
    assert abs(y[3, 0] - 1.0) < 0.1
    f.reset()
    assert np.allclose(f(base), base)


def _texture(h, w, shift=0.0):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx = xx - shift
    v = 0.4 + 0.2 * np.sin(xx / 6.0) * np.cos(yy / 9.0) + 0.1 * np.sin((xx + yy) / 3.5)
    return np.repeat(v[..., None], 3, axis=2).astype(np.float32)


def test_flow_stabiliser_removes_flicker_on_a_moving_texture():
    rng = np.random.default_rng(1)
    h, w = 96, 128
    st = temporal.FlowStabilizer(strength=0.6, flow_scale=1.0)
    valid = np.ones((h, w), bool)
    factors = 1.0 + 0.05 * rng.normal(size=16)  # global flicker of the per-frame estimate
    ratios = []
    for t in range(16):
        img = _texture(h, w, shift=1.5 * t)
        out = st(img * factors[t], img, valid)
        ratios.append(float(np.median(out[:, 24:-24] / img[:, 24:-24])))
    # the flicker factor that survives changes less from frame to frame than the raw one
    assert np.abs(np.diff(ratios[4:])).mean() < 0.7 * np.abs(np.diff(factors[4:])).mean()


def test_flow_stabiliser_off_and_occlusion():
    h, w = 64, 64
    st = temporal.FlowStabilizer(strength=0.0)
    a = _texture(h, w)
    assert st(a * 2, a, np.ones((h, w), bool)) is not None
    assert np.allclose(st(a * 3, a, np.ones((h, w), bool)), a * 3)
    st = temporal.FlowStabilizer(strength=0.9, flow_scale=1.0)
    st(a, a, np.ones((h, w), bool))
    b = 1.0 - a  # the content changes completely: the occlusion check rejects the past
    out = st(b * 0.5, b, np.ones((h, w), bool))
    assert np.abs(out - b * 0.5).mean() < 0.2 * np.abs(a - b * 0.5).mean()
