"""The shared circle fit that the outline judge and the border rule both use."""

import numpy as np

from sam_droplet.engine.border import fit_circle
from sam_droplet.engine.circles import fit_circles
from sam_droplet.engine.detect.outlines import circle_agreement


def _ring(cx: float, cy: float, r: float, n: int = 64, start: float = 0.0, arc: float = 2 * np.pi):
    t = start + np.arange(n) * arc / n
    return cx + r * np.cos(t), cy + r * np.sin(t)


def test_each_row_gets_its_own_circle_and_the_points_their_distance_from_it():
    x1, y1 = _ring(40.0, 25.0, 12.0)
    x2, y2 = _ring(-3.5, 100.25, 80.0)
    cx, cy, r, residuals = fit_circles(np.stack([x1, x2]), np.stack([y1, y2]), np.ones((2, 64)))
    np.testing.assert_allclose(cx, [40.0, -3.5], atol=1e-9)
    np.testing.assert_allclose(cy, [25.0, 100.25], atol=1e-9)
    np.testing.assert_allclose(r, [12.0, 80.0], atol=1e-9)
    assert residuals.shape == (2, 64) and residuals.max() < 1e-9


def test_points_of_no_weight_do_not_pull_the_circle():
    xs, ys = _ring(50.0, 50.0, 20.0, n=48, arc=1.5 * np.pi)
    # A spur: points far off the circle, left out by their weight.
    xs = np.concatenate([xs, np.linspace(76.0, 99.0, 16)])
    ys = np.concatenate([ys, np.full(16, 50.0)])
    weights = np.r_[np.ones(48), np.zeros(16)]
    cx, cy, r, residuals = fit_circles(xs[None], ys[None], weights[None])
    np.testing.assert_allclose([cx[0], cy[0], r[0]], [50.0, 50.0, 20.0], atol=1e-9)
    assert residuals[0, 48:].min() > 5.0  # the spur's points are judged against that circle too


def test_it_is_the_least_squares_circle_of_the_normal_equations():
    rng = np.random.default_rng(0)
    xs, ys = _ring(10.0, -4.0, 30.0, n=90)
    xs, ys = xs + rng.normal(0, 0.7, 90), ys + rng.normal(0, 0.7, 90)
    a = np.column_stack([2 * xs, 2 * ys, np.ones(90)])
    (ex, ey, c), *_ = np.linalg.lstsq(a, xs**2 + ys**2, rcond=None)
    cx, cy, r, _ = fit_circles(xs[None], ys[None], np.ones((1, 90)))
    np.testing.assert_allclose([cx[0], cy[0], r[0]], [ex, ey, np.sqrt(c + ex**2 + ey**2)], rtol=1e-9)


def test_both_users_see_a_round_outline_as_a_circle():
    xs, ys = _ring(60.0, 45.0, 25.0, n=72)
    assert circle_agreement(xs[None], ys[None])[0] == 1.0
    fit = fit_circle(np.column_stack([xs, ys]))
    assert fit is not None
    np.testing.assert_allclose(fit[:3], (60.0, 45.0, 25.0), atol=1e-9)
    assert fit[3].all()
