"""L-BFGS with a strong Wolfe line search, on numpy arrays or torch tensors.

Nocedal and Wright, *Numerical Optimization* (2nd ed., 2006): the limited-memory
inverse-Hessian product (Algorithm 7.4), the line search for the strong Wolfe conditions
(Algorithms 3.5 and 3.6) with cubic interpolation (equation 3.59).

At few-shot sizes an evaluation of the loss is a few dozen small array operations, and an
optimiser that spends another few dozen on its own vector algebra doubles the time. So
the two loops of the inverse-Hessian product are folded into four matrix-vector products
with the stored pairs (:class:`InverseHessian`), the scalar arithmetic of the recursion
and of the line search runs on Python floats, and the same code runs on numpy arrays
(the CPU) and on torch tensors (a GPU), using only what both spell alike.
"""

import math

import numpy as np

#: The strong Wolfe conditions' constants: sufficient decrease and curvature (Nocedal and
#: Wright's choice for quasi-Newton methods).
SUFFICIENT_DECREASE, CURVATURE = 1e-4, 0.9
#: Most loss evaluations of one line search.
MAX_LINE_SEARCH_EVALUATIONS = 25


class InverseHessian:
    """The L-BFGS approximation ``H`` of the inverse Hessian from the latest pairs.

    With pairs ``(s_i, y_i)``, ``rho_i = 1 / (y_i . s_i)``, oldest first, and the initial
    matrix ``gamma I`` (``gamma = s . y / y . y`` of the newest pair), ``H g`` is the
    two-loop recursion's. Its loops are sequential in the scalars only:

    - ``a_i = rho_i s_i . q_i`` with ``q_i = g - sum_{j > i} a_j y_j``, so
      ``s_i . q_i = (S g)_i - sum_{j > i} a_j (S Y^T)_{ij}``, and ``q = g - Y^T a``;
    - ``b_i = rho_i y_i . r_i`` with ``r_i = gamma q + sum_{j < i} c_j s_j`` and
      ``c_j = a_j - b_j``, so ``y_i . r_i = (Y r_0)_i + sum_{j < i} c_j (S Y^T)_{ji}``,
      and ``H g = r_0 + S^T c``.

    So four products with the stored pairs, and scalar loops over ``S Y^T``, replace the
    recursion's ``4 m`` vector operations: at few-shot sizes a tenth of the calls, and at
    512-d (260,000 parameters) the same passes over memory. The loops read only the
    entries ``s_i . y_j`` of an older pair ``i`` and a newer ``j``, so ``S Y^T`` costs no
    pass of its own: a new pair's column is ``s_i . y = (S g_new)_i - (S g)_i``, taken
    from the next direction's ``S g``.

    Parameters
    ----------
    x : array of shape (n,)
        A vector of the kind the pairs will be (numpy or torch, dtype, device).
    history : int
        Pairs kept.
    """

    def __init__(self, x, history):
        self.history = history
        if isinstance(x, np.ndarray):
            self.S, self.Y = (np.zeros((history, len(x)), dtype=x.dtype) for _ in range(2))
        else:
            self.S, self.Y = (x.new_zeros((history, len(x))) for _ in range(2))
        self.SY = [[0.0] * history for _ in range(history)]  # s_i . y_j, Python floats
        self.order = []  # rows of S and Y, oldest pair first
        self.gamma = 1.0
        self._pending = None  # the newest row, its column waiting for the next S g
        self._Sg = None  # the last direction's S g, by row

    def direction(self, g):
        """``-H g``."""
        if not self.order:  # no pair yet (gamma is still 1): steepest descent
            return -g
        order, SY = self.order, self.SY
        # rows are filled in order until the history is full: the first len(order) hold
        # every pair, and the products skip the empty rest
        S, Y = self.S[: len(order)], self.Y[: len(order)]
        Sg = _host(S @ g)
        if self._pending is not None:  # s_i . y_new = s_i . g_new - s_i . g_old
            new, self._pending = self._pending, None
            for i in order:
                if i != new:
                    SY[i][new] = Sg[i] - self._Sg[i]
        # plain loops: half the time of sum() over generators at history 10
        a = [0.0] * len(order)
        for k in range(len(order) - 1, -1, -1):  # newest first
            i = order[k]
            row, s_q = SY[i], Sg[i]
            for j in order[k + 1:]:
                s_q -= a[j] * row[j]
            a[i] = s_q / row[i]  # rho_i = 1 / (s_i . y_i)
        # -r_0 = -gamma q = gamma (Y^T a - g), so that the direction needs no negation of
        # its own; in place, so that of the parameters' size only the direction and the
        # product c S below are new arrays
        minus_r = self._like(a, g) @ Y
        minus_r -= g
        minus_r *= self.gamma
        Yr = _host(Y @ minus_r)  # -(Y r_0)
        c = [0.0] * len(order)
        for k, i in enumerate(order):  # oldest first
            y_r = -Yr[i]
            for j in order[:k]:
                y_r += c[j] * SY[j][i]
            c[i] = a[i] - y_r / SY[i][i]
        self._Sg = Sg
        minus_r -= self._like(c, g) @ S
        return minus_r

    def add(self, t, d, y):
        """Keep the pair ``s = t d``, ``y`` of a step ``t`` along the last
        :meth:`direction` ``d``, dropping the oldest when full; skipped (False) when its
        curvature ``y . s`` is too small to keep ``H`` positive definite. Both are copied
        into the history: :func:`lbfgs` reuses its ``y`` array for the next pair."""
        ys = t * float(y @ d)
        if ys <= 1e-10:
            return False
        row = len(self.order) if len(self.order) < self.history else self.order.pop(0)
        self.order.append(row)
        self.S[row] = d
        self.S[row] *= t
        self.Y[row] = y
        self.SY[row][row] = ys
        self._pending = row
        self.gamma = ys / float(y @ y)
        return True

    @staticmethod
    def _like(values, like):
        """A list of floats as an array of ``like``'s kind."""
        if isinstance(like, np.ndarray):
            return np.array(values, dtype=like.dtype)
        import torch

        return torch.as_tensor(values, dtype=like.dtype, device=like.device)


def _host(array):
    """A small array of numpy or torch as a list of Python floats."""
    if isinstance(array, np.ndarray):
        return array.tolist()
    return array.double().cpu().tolist()


def cubic_minimum(t1, f1, g1, t2, f2, g2, low, high):
    """Minimiser in ``[low, high]`` of the cubic through ``(t1, f1)``, ``(t2, f2)`` with
    slopes ``g1``, ``g2`` (Nocedal and Wright, equation 3.59); the middle of the bounds
    when there is no such cubic (a loss or slope not finite) or it has no minimum."""
    middle = (low + high) / 2
    d1 = g1 + g2 - 3 * (f1 - f2) / (t1 - t2)
    discriminant = d1 * d1 - g1 * g2
    if not discriminant >= 0 or math.isinf(discriminant):  # NaN, negative or infinite
        return middle
    d2 = math.copysign(math.sqrt(discriminant), t2 - t1)
    denominator = g2 - g1 + 2 * d2
    if denominator == 0:  # a straight line: no minimum
        return middle
    return min(max(t2 - (t2 - t1) * (g2 + d2 - d1) / denominator, low), high)


def strong_wolfe_search(phi, f0, slope0, g0, t, tol, max_evaluations):
    """A step length ``t`` that satisfies the strong Wolfe conditions along a direction.

    ``phi(t)`` returns the loss, its slope along the direction and its gradient at step
    ``t``; ``f0``, ``slope0 < 0`` and ``g0`` are those at 0. Nocedal and
    Wright's Algorithm 3.5: grow the step until it brackets an acceptable one, then
    Algorithm 3.6 (zoom) narrows the bracket by cubic interpolation, kept a tenth of the
    bracket away from its ends. The search ends early, at the best step so far, after
    ``max_evaluations`` evaluations or when the bracket is narrower than ``tol``.

    Returns
    -------
    t, f, gradient : float, float, array
        The step (0 or one of those evaluated), the loss and the gradient there.
    n_evaluations : int
    """
    previous = (0.0, f0, slope0, g0)
    evaluations = 0
    while True:
        current = (t, *phi(t))
        evaluations += 1
        f, slope = current[1], current[2]
        if not _decreases(f, t, f0, slope0) or (evaluations > 1 and f >= previous[1]):
            return _zoom(phi, f0, slope0, previous, current, tol, max_evaluations, evaluations)
        if abs(slope) <= -CURVATURE * slope0 or evaluations == max_evaluations:
            return (*current[:2], current[3], evaluations)
        if slope >= 0:
            return _zoom(phi, f0, slope0, current, previous, tol, max_evaluations, evaluations)
        # extrapolate: beyond t by at least a hundredth of the last increase, at most 10 t
        t = cubic_minimum(*previous[:3], *current[:3], t + 0.01 * (t - previous[0]), 10 * t)
        previous = current


def _decreases(f, t, f0, slope0):
    """The sufficient decrease condition; never met by a NaN or infinite loss, so that a
    step into an overflow is treated as too long."""
    return f <= f0 + SUFFICIENT_DECREASE * t * slope0


def _zoom(phi, f0, slope0, low, high, tol, max_evaluations, evaluations):
    """Algorithm 3.6 on the bracket ``low``, ``high`` (``(t, f, slope, gradient)``;
    ``low`` the end with the lower loss)."""
    while evaluations < max_evaluations and abs(high[0] - low[0]) > tol:
        left, right = sorted((low[0], high[0]))
        margin = 0.1 * (right - left)
        t = cubic_minimum(*low[:3], *high[:3], left + margin, right - margin)
        current = (t, *phi(t))
        evaluations += 1
        f, slope = current[1], current[2]
        if not _decreases(f, t, f0, slope0) or f >= low[1]:
            high = current
            continue
        if abs(slope) <= -CURVATURE * slope0:
            return (*current[:2], current[3], evaluations)
        if slope * (high[0] - low[0]) >= 0:
            high = low
        low = current
    return (*low[:2], low[3], evaluations)


def _largest_entry(a):
    """``max(abs(a))`` as a float without an ``abs(a)`` array (NaN if ``a`` has one)."""
    return max(float(a.max()), -float(a.min()))


def _as_it_is(v):
    return v


def _step_into(out, start, t, d):
    """``out = start + t d`` in place: no temporaries of the parameters' size (a sixth
    faster at 267,000 parameters)."""
    out[:] = d
    out *= t
    out += start


def lbfgs(x, value_and_grad, *, max_iter, max_eval, tol, history=10, entries=None):
    """Minimise ``value_and_grad``'s loss over ``x`` with L-BFGS, in place.

    Parameters
    ----------
    x : array of shape (n,)
        The start; holds the last accepted point on return.
    value_and_grad : callable
        Takes no argument and returns the loss (a scalar) and its gradient (an array of
        shape ``(n,)``) at ``x``'s current value.
    max_iter : int
        Most iterations (line searches).
    max_eval : int
        Most evaluations; a line search that would go beyond them ends early.
    tol : float
        Stops when the largest entry of the gradient or of a step is at most ``tol`` (or
        the search direction does not descend, by rounding).
    history : int, default=10
        Pairs kept for the inverse Hessian.
    entries : callable or None, default=None
        Takes a vector like ``x`` and returns the array whose entries the tolerances and
        the first step measure, for an ``x`` that holds other coordinates of the
        parameters (an isometry keeps L-BFGS's steps but not the largest entries); None:
        ``x``'s own.

    Returns
    -------
    losses : list of float
        The loss at each evaluation, the start's first.
    n_iter : int
        Iterations taken (line searches).
    """
    entries = entries or _as_it_is
    f, g = value_and_grad()
    f = float(f)
    losses = [f]
    g_entries = entries(g)
    largest_gradient = _largest_entry(g_entries)
    # a start that is not finite is left as it is: the caller sees it in the losses
    if max_iter == 0 or largest_gradient <= tol or not math.isfinite(f + largest_gradient):
        return losses, 0
    # the first step is at most 1 in the gradient's L1 norm (its scale is unknown)
    first_t = min(1.0, 1.0 / float(abs(g_entries).sum()))
    inverse_hessian = InverseHessian(x, history)
    # x's start and gradient change, reused: fresh arrays of the parameters' size cost
    # more than their arithmetic at 512-d (the OS maps and zeroes their pages)
    start, gradient_change = x * 1, x * 0  # of either kind

    evaluated_t = None  # the step that x holds, set by phi

    def phi(t):
        nonlocal evaluated_t
        _step_into(x, start, t, d)
        evaluated_t = t
        value, gradient = value_and_grad()
        losses.append(float(value))
        return losses[-1], float(gradient @ d), gradient

    n_iter = 0
    while n_iter < max_iter and len(losses) < max_eval:
        d = inverse_hessian.direction(g)
        slope = float(g @ d)
        # Only on a direction that does not descend (rounding): a flat one is no sign of
        # convergence, as a small decrease is not (below). Its scale is the gradient's
        # squared, and a run that stopped at a slope above -tol stopped with gradient
        # entries of 1e-3, at an iteration that rounding decided.
        if not slope < 0:
            break
        n_iter += 1
        t = first_t if n_iter == 1 else 1.0
        start[:] = x
        largest = _largest_entry(entries(d))
        t, f_new, g_new, _ = strong_wolfe_search(
            phi, f, slope, g, t, tol / largest,
            min(MAX_LINE_SEARCH_EVALUATIONS, max_eval - len(losses)))
        if t != evaluated_t:  # the search chose an earlier step than its last
            _step_into(x, start, t, d)
        gradient_change[:] = g_new
        gradient_change -= g
        inverse_hessian.add(t, d, gradient_change)
        f, g = f_new, g_new
        # Not on a small decrease of the loss: L-BFGS's progress is uneven, and a run that
        # stopped on one iteration's decrease below tol stopped mid-way (CMM's refinement
        # near a loss of 0.01), at an iteration that float rounding decided.
        if _largest_entry(entries(g)) <= tol or t * largest <= tol:
            break
    return losses, n_iter
