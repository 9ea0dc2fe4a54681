"""L-BFGS against dense references: the BFGS update, the strong Wolfe conditions."""

import math

import numpy as np
import pytest
import torch

from sklearn_cmm._math import lbfgs as lbfgs_module
from sklearn_cmm._math.lbfgs import (
    CURVATURE,
    SUFFICIENT_DECREASE,
    InverseHessian,
    _largest_entry,
    cubic_minimum,
    lbfgs,
    strong_wolfe_search,
)

from ._backends import BACKENDS


def dense_inverse_hessian(pairs, size):
    """``H`` by the BFGS update from ``gamma I`` over the pairs, oldest first (Nocedal and
    Wright, equation 7.19), as a matrix."""
    s, y = pairs[-1]
    H = (s @ y) / (y @ y) * np.eye(size)
    for s, y in pairs:
        rho = 1.0 / (y @ s)
        V = np.eye(size) - rho * np.outer(y, s)
        H = V.T @ H @ V + rho * np.outer(s, s)
    return H


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_pairs", [0, 1, 3, 7])
def test_direction_is_minus_the_bfgs_inverse_hessian_times_g(backend, n_pairs):
    """Three pairs kept: 7 pairs wrap the stored rows around twice, and a pair of
    negative curvature in the middle is skipped."""
    rng = np.random.RandomState(0)
    size, history = 6, 3
    arrays = BACKENDS[backend](np.float64)
    A = rng.randn(size, size)
    A = A @ A.T + size * np.eye(size)  # y = A s: positive curvature
    H = InverseHessian(arrays.asarray(np.zeros(size)), history)
    kept = []
    g = rng.randn(size)
    for k in range(n_pairs):
        d = np.asarray(H.direction(arrays.asarray(g)))
        t = 0.3 + 0.2 * k
        y = A @ (t * d) if k != 4 else -A @ (t * d)
        assert H.add(t, arrays.asarray(d), arrays.asarray(y)) == (k != 4)
        if k != 4:
            kept.append((t * d, y))
        g = g + y
    direction = np.asarray(H.direction(arrays.asarray(g)))
    if not kept:
        np.testing.assert_array_equal(direction, -g)
        return
    expected = -dense_inverse_hessian(kept[-history:], size) @ g
    np.testing.assert_allclose(direction, expected, rtol=1e-10, atol=1e-12)


def test_cubic_minimum_is_the_cubics():
    # the cubic p(t) = t^3 - 3 t (minimum at t = 1), known at 0 and 2
    p, dp = (lambda t: t**3 - 3 * t), (lambda t: 3 * t**2 - 3)
    assert cubic_minimum(0, p(0), dp(0), 2, p(2), dp(2), -10, 10) == pytest.approx(1.0)
    assert cubic_minimum(2, p(2), dp(2), 0, p(0), dp(0), -10, 10) == pytest.approx(1.0)
    # kept within the bounds, exactly at the nearer bound
    assert cubic_minimum(0, p(0), dp(0), 2, p(2), dp(2), 1.5, 1.8) == 1.5
    # a straight line with positive slope everywhere has no minimum: the bounds' middle
    assert cubic_minimum(0, 0.0, 1.0, 1, 1.0, 1.0, 0.2, 0.6) == pytest.approx(0.4)


#: Functions along a line: the loss, its slope and (standing in for the gradient) the step.
LINES = {
    "wavy bowl": lambda t: ((t - 2) ** 2 - 4 + 0.3 * math.sin(5 * t),
                            2 * (t - 2) + 1.5 * math.cos(5 * t), t),
    # steep beyond its minimum (0.33): a long first step's bracket must flip ends
    "exponential": lambda t: (math.exp(3 * t) - 8 * t, 3 * math.exp(3 * t) - 8, t),
}


@pytest.mark.parametrize("line", LINES)
@pytest.mark.parametrize("t0", [1e-3, 0.5, 1.0, 4.0, 30.0])
def test_line_search_meets_the_strong_wolfe_conditions(line, t0):
    """A too short first step is grown, a too long one narrowed."""
    phi = LINES[line]
    f0, slope0, _ = phi(0.0)
    t, f, gradient, evaluations = strong_wolfe_search(phi, f0, slope0, None, t0, 1e-9, 25)
    assert f == phi(t)[0] and gradient == t and 1 <= evaluations <= 25
    assert f <= f0 + SUFFICIENT_DECREASE * t * slope0
    assert abs(phi(t)[1]) <= -CURVATURE * slope0


@pytest.mark.parametrize("blow_up", [math.inf, math.nan])
def test_a_step_into_an_overflow_is_too_long(blow_up):
    def phi(t):  # (t - 1)^2 up to t = 2, where the loss and its slope overflow
        return ((t - 1) ** 2, 2 * (t - 1), t) if t < 2 else (blow_up, blow_up, t)

    t, f, _, _ = strong_wolfe_search(phi, 1.0, -2.0, None, 8.0, 1e-9, 25)
    assert t < 2 and f == (t - 1) ** 2
    assert f <= 1.0 + SUFFICIENT_DECREASE * t * -2.0 and abs(2 * (t - 1)) <= CURVATURE * 2


def test_a_first_step_that_meets_the_conditions_is_taken():
    def phi(t):  # (t - 1)^2: the first step lands on the minimum
        return (t - 1) ** 2, 2 * (t - 1), t

    assert strong_wolfe_search(phi, 1.0, -2.0, None, 1.0, 1e-9, 25) == (1.0, 0.0, 1.0, 1)


def test_line_search_stops_at_its_evaluations_with_the_best_step():
    calls = []

    def phi(t):  # decreasing ever more steeply: no step meets the curvature condition
        calls.append(t)
        return -t**3, -3 * t**2 - 1, t

    t, f, _, evaluations = strong_wolfe_search(phi, 0.0, -1.0, None, 1.0, 1e-9, 3)
    assert evaluations == len(calls) == 3 and t == calls[-1] and f == -t**3


@pytest.mark.parametrize("backend", BACKENDS)
def test_lbfgs_minimises_rosenbrocks_function(backend):
    arrays = BACKENDS[backend](np.float64)
    x = arrays.asarray(np.array([-1.2, 1.0, -0.5, 0.8]))

    def value_and_grad():
        v = np.asarray(x, dtype=np.float64)
        value = np.sum(100 * (v[1:] - v[:-1] ** 2) ** 2 + (1 - v[:-1]) ** 2)
        grad = np.zeros_like(v)
        grad[:-1] += -400 * v[:-1] * (v[1:] - v[:-1] ** 2) - 2 * (1 - v[:-1])
        grad[1:] += 200 * (v[1:] - v[:-1] ** 2)
        return value, arrays.asarray(grad)

    losses, n_iter = lbfgs(x, value_and_grad, max_iter=500, max_eval=1000, tol=1e-10)
    np.testing.assert_allclose(np.asarray(x), np.ones(4), atol=1e-5)
    assert 0 < n_iter < 500 and len(losses) <= 1000 and losses[-1] < 1e-10
    assert min(losses) == losses[-1] or losses[-1] < 1e-12


def test_a_small_decrease_of_the_loss_does_not_end_the_run(monkeypatch):
    # Every line search reports a decrease of the loss far below tol: the run goes on
    # until the gradient is within tol.
    search = lbfgs_module.strong_wolfe_search

    def barely_decreasing(phi, f0, *args):
        t, _, gradient, evaluations = search(phi, f0, *args)
        return t, f0 - 1e-9, gradient, evaluations

    monkeypatch.setattr(lbfgs_module, "strong_wolfe_search", barely_decreasing)
    x = np.array([3.0, -2.0, 0.5])
    _, n_iter = lbfgs(x, lambda: (float(x @ x), 2 * x), max_iter=50, max_eval=100, tol=1e-5)
    assert n_iter > 1 and np.abs(2 * x).max() <= 1e-5


@pytest.mark.parametrize("max_iter, max_eval", [(3, 100), (100, 7)])
def test_lbfgs_keeps_to_its_budgets(max_iter, max_eval):
    x = np.array([-1.2, 1.0])

    def value_and_grad():
        return (100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2, np.array(
            [-400 * x[0] * (x[1] - x[0] ** 2) - 2 * (1 - x[0]), 200 * (x[1] - x[0] ** 2)]))

    losses, n_iter = lbfgs(x, value_and_grad, max_iter=max_iter, max_eval=max_eval,
                           tol=0.0)
    assert n_iter <= max_iter and len(losses) <= max_eval
    assert n_iter == max_iter or len(losses) == max_eval
    assert value_and_grad()[0] == min(losses)  # x is the best point seen


@pytest.mark.parametrize("backend", BACKENDS)
def test_lbfgs_returns_the_searchs_step_not_its_last_evaluation(backend):
    """On kinks (an L1 loss) line searches end on an earlier step than their last
    evaluation; x must hold that step, the best point seen."""
    arrays = BACKENDS[backend](np.float64)
    target = np.array([1.0, -2.0, 0.5])
    x = arrays.asarray(np.zeros(3))

    def value_and_grad():
        v = np.asarray(x, dtype=np.float64)
        return np.abs(v - target).sum() + 0.01 * v @ v, arrays.asarray(
            np.sign(v - target) + 0.02 * v)

    losses, _ = lbfgs(x, value_and_grad, max_iter=20, max_eval=60, tol=1e-9)
    assert losses[-1] != min(losses)  # the premise: the last evaluation was not kept
    assert value_and_grad()[0] == min(losses)


def test_a_flat_direction_does_not_end_the_run():
    """The first direction is -g, its slope -|g|^2: at x = 1 the gradient 0.5 gives
    -0.25, above -tol = -0.3, while the gradient's largest entry (0.5) is above tol; the
    run goes on until the gradient is within tol."""
    x = np.array([1.0])
    losses, n_iter = lbfgs(x, lambda: (0.25 * float(x @ x), 0.5 * x), max_iter=10,
                           max_eval=20, tol=0.3)
    assert n_iter >= 1 and len(losses) > 1 and abs(0.5 * x[0]) <= 0.3


def test_a_gradient_within_tol_ends_the_run_after_a_long_step():
    """From (1, 0.001) on 0.5 (x^2 + 2 y^2) the first line search lands near the minimum
    with a step of about 1: the gradient's entries (about 0.002) are within tol = 0.01,
    the step's are not, and the run ends there."""
    x = np.array([1.0, 0.001])
    curvature = np.array([1.0, 2.0])
    losses, n_iter = lbfgs(x, lambda: (0.5 * float(x @ (curvature * x)), curvature * x),
                           max_iter=10, max_eval=20, tol=0.01)
    assert n_iter == 1 and np.abs(curvature * x).max() <= 0.01


def test_a_direction_that_does_not_descend_ends_the_run_uncounted(monkeypatch):
    # rounding can make -H g point uphill; its iteration takes no step and is not counted
    directions = []
    direction = lbfgs_module.InverseHessian.direction

    def uphill_second(self, g):
        directions.append(direction(self, g))
        return directions[-1] if len(directions) == 1 else -directions[-1]

    monkeypatch.setattr(lbfgs_module.InverseHessian, "direction", uphill_second)
    x = np.array([3.0, -2.0, 0.5])
    losses, n_iter = lbfgs(x, lambda: (float(x @ x) + x[0] ** 4, 2 * x + [4 * x[0] ** 3, 0, 0]),
                           max_iter=50, max_eval=100, tol=1e-8)
    assert len(directions) == 2 and n_iter == 1
    assert float(x @ x) + x[0] ** 4 == min(losses) < losses[0]


@pytest.mark.parametrize("start, loss",
                         [(np.zeros(3), 0.0), (np.array([1.0, np.inf, 0.0]), np.inf)])
def test_lbfgs_evaluates_a_minimum_or_a_start_that_is_not_finite_once(start, loss):
    x = start.copy()
    losses, n_iter = lbfgs(x, lambda: (float(x @ x), 2 * x), max_iter=10, max_eval=20,
                           tol=1e-8)
    assert losses == [loss] and n_iter == 0 and np.array_equal(x, start)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("values, expected", [
    ([-3.0, 2.0, 1.0], 3.0), ([0.5, -0.25, 4.0], 4.0), ([-1.0, -2.0], 2.0),
    ([1.0, math.inf], math.inf), ([-math.inf, 1.0], math.inf)])
def test_largest_entry_is_the_largest_absolute_value(backend, values, expected):
    arrays = BACKENDS[backend](np.float32)
    assert _largest_entry(arrays.asarray(values)) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_largest_entry_of_an_array_with_nan_is_nan(backend):
    arrays = BACKENDS[backend](np.float32)
    assert math.isnan(_largest_entry(arrays.asarray([1.0, math.nan, -2.0])))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [30.0, 1.0, 0.03])
def test_lbfgs_on_rotated_coordinates_measured_by_entries_takes_the_same_steps(backend,
                                                                              scale):
    """Rosenbrock's function of ``u = Q z`` (``Q`` orthogonal), minimised over ``z`` with
    ``entries(z) = Q z``: the losses and points of minimising over ``u`` itself, at every
    tolerance of a range, so that the gradient's, the step's and the loss's tolerances
    each end runs near their thresholds (their measures of ``z`` alone are not ``u``'s).
    Scaling the input makes the gradients small (a wide valley) or the steps short."""
    arrays = BACKENDS[backend](np.float64)
    Q = np.linalg.qr(np.random.RandomState(0).randn(6, 6))[0]
    start = scale * np.array([-1.2, 1.0, -0.5, 0.8, 0.3, -0.9])

    def rosenbrock(u):
        u = u / scale
        value = np.sum(100 * (u[1:] - u[:-1] ** 2) ** 2 + (1 - u[:-1]) ** 2)
        grad = np.zeros_like(u)
        grad[:-1] += -400 * u[:-1] * (u[1:] - u[:-1] ** 2) - 2 * (1 - u[:-1])
        grad[1:] += 200 * (u[1:] - u[:-1] ** 2)
        return value, grad / scale

    def entries(v):
        return arrays.asarray(Q @ np.asarray(v, dtype=np.float64))

    for tol in np.logspace(-9, 3, 49):
        u, z = arrays.asarray(start), arrays.asarray(Q.T @ start)
        u_losses, u_iter = lbfgs(u, lambda: tuple(map(arrays.asarray, rosenbrock(
            np.asarray(u, dtype=np.float64)))), max_iter=20, max_eval=600, tol=tol)

        def in_z():
            value, grad = rosenbrock(Q @ np.asarray(z, dtype=np.float64))
            return value, arrays.asarray(Q.T @ grad)

        z_losses, z_iter = lbfgs(z, in_z, max_iter=20, max_eval=600, tol=tol,
                                 entries=entries)
        assert z_iter == u_iter, tol
        np.testing.assert_allclose(z_losses, u_losses, rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose(Q @ np.asarray(z), np.asarray(u), atol=1e-7 * scale)


def test_lbfgs_measures_the_starts_gradient_by_entries():
    """The gradient (1, 0) is (0.71, 0.71) in coordinates rotated by 45 degrees: below a
    tolerance of 0.8 there (no step), above it as it is."""
    rotation = np.array([[1.0, -1.0], [1.0, 1.0]]) / math.sqrt(2)
    for entries, n_iter in ((lambda v: rotation @ v, 0), (None, 1)):
        x = np.array([1.0, 0.0])
        losses, taken = lbfgs(x, lambda: (0.5 * float(x @ x), x.copy()), max_iter=1,
                              max_eval=20, tol=0.8, entries=entries)
        assert taken == n_iter and (x[0] == 1.0) == (n_iter == 0)
