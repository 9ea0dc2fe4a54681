from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sklearn_cmm._math.cmm import cmm_logits, map_to_text, ridge_map_to_prototypes
from sklearn_cmm._math.cmm_loss import SPAN_MAX_SHARE, CMMRefinementLoss
from sklearn_cmm._torch import minimize_lbfgs, to_numpy

from ._backends import BACKENDS


def _unit(A):
    return A / np.linalg.norm(A, axis=-1, keepdims=True)


# fewer samples than dimensions solve the n_samples x n_samples system, the rest the
# dim x dim one: both sides of the switch and the boundary (5, 6, 7 samples in 6-d)
@pytest.mark.parametrize("n_samples, dim", [(5, 12), (40, 6), (5, 6), (6, 6), (7, 6)])
@pytest.mark.parametrize("ridge", [1e-3, 1.0, 30.0])
def test_ridge_map_matches_augmented_lstsq(n_samples, dim, ridge):
    rng = np.random.RandomState(0)
    V, y, P = rng.randn(n_samples, dim), rng.randint(0, 3, n_samples), rng.randn(3, dim)
    targets = np.array([P[label] for label in y])
    # min ||V W - P_y||^2 + ridge ||W - I||^2 is least squares on
    # [V; sqrt(r) I] W = [P_y; sqrt(r) I]
    root = np.sqrt(ridge) * np.eye(dim)
    expected = np.linalg.lstsq(np.vstack([V, root]), np.vstack([targets, root]), rcond=None)[0]
    np.testing.assert_allclose(ridge_map_to_prototypes(V, y, P, ridge), expected, atol=1e-9)


@pytest.mark.parametrize("n_samples", [6, 7])  # at and above the switch, in 6-d
def test_ridge_map_solves_with_the_gram_it_is_given(n_samples):
    rng = np.random.RandomState(4)
    V, y, P = rng.randn(n_samples, 6), rng.randint(0, 3, n_samples), rng.randn(3, 6)
    computed = ridge_map_to_prototypes(V, y, P, 0.5)
    np.testing.assert_allclose(ridge_map_to_prototypes(V, y, P, 0.5, gram=V.T @ V), computed,
                               rtol=1e-12, atol=1e-12)
    # a Gram of other rows is not replaced by V's: the map is of those rows' system
    others = rng.randn(9, 6)
    targets = np.array([P[label] for label in y])
    expected = np.linalg.solve(others.T @ others + 0.5 * np.eye(6),
                               V.T @ targets + 0.5 * np.eye(6))
    np.testing.assert_allclose(ridge_map_to_prototypes(V, y, P, 0.5, gram=others.T @ others),
                               expected, rtol=1e-10)


def test_ridge_map_is_identity_outside_the_span_of_the_samples():
    rng = np.random.RandomState(1)
    V, P = rng.randn(3, 8), rng.randn(2, 8)
    W = ridge_map_to_prototypes(V, np.array([0, 1, 1]), P, 0.5)
    outside = np.linalg.svd(V)[2][3:]  # orthonormal basis of the complement of V's rows
    np.testing.assert_allclose(outside @ W, outside, atol=1e-12)


def test_ridge_map_limits():
    rng = np.random.RandomState(2)
    # one sample per "class": prototypes V @ W_true are reachable exactly by W_true
    V = rng.randn(30, 5)
    W_true = rng.randn(5, 5)
    y = np.arange(30)
    targets = V @ W_true
    np.testing.assert_allclose(ridge_map_to_prototypes(V, y, targets, 1e-10), W_true, atol=1e-7)
    np.testing.assert_allclose(ridge_map_to_prototypes(V, y, targets, 1e10), np.eye(5), atol=1e-7)


def test_map_to_text():
    rng = np.random.RandomState(3)
    X, W = rng.randn(7, 4) * 5, rng.randn(4, 4)
    mapped = map_to_text(X, W)
    for i in range(7):
        v = X[i] / np.linalg.norm(X[i])
        np.testing.assert_allclose(mapped[i], (v @ W) / np.linalg.norm(v @ W))


@pytest.mark.parametrize("zero_shot_weight", [0.0, 0.7])
def test_cmm_logits_match_loop(zero_shot_weight):
    rng = np.random.RandomState(4)
    X, W = rng.randn(6, 5), rng.randn(5, 5)
    T, T0 = rng.randn(3, 5), rng.randn(3, 5)
    logits = cmm_logits(X, W, T, T0, 20.0, zero_shot_weight)

    def cos(a, b):
        return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))

    for i in range(6):
        v = X[i] / np.linalg.norm(X[i])
        for c in range(3):
            expected = 20.0 * cos(v @ W, T[c]) + zero_shot_weight * 20.0 * cos(v, T0[c])
            assert logits[i, c] == pytest.approx(expected, rel=1e-12, abs=1e-12)


def _refinement_reference(V, y, W, T, T0, *, logit_scale, zero_shot_weight, triplet_weight,
                          margin):
    """CMM's refinement loss, shot by shot (without the penalty)."""

    def cos(a, b):
        return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))

    total = 0.0
    for i in range(len(y)):
        sims = np.array([cos(V[i] @ W, t) for t in T])
        logits = logit_scale * sims + zero_shot_weight * logit_scale * np.array(
            [cos(V[i], t) for t in T0])
        total += np.logaddexp.reduce(logits) - logits[y[i]]
        hardest = max(sims[c] for c in range(len(T)) if c != y[i])
        total += triplet_weight * max(0.0, margin - sims[y[i]] + hardest)
    return total / len(y)


def _problem(seed=8, n=15, dim=5, n_classes=3):
    rng = np.random.RandomState(seed)
    V, y = _unit(rng.randn(n, dim)), rng.randint(0, n_classes, n)
    W0, T0 = np.eye(dim) + 0.3 * rng.randn(dim, dim), _unit(rng.randn(n_classes, dim))
    return rng, V, y, W0, T0


def _hand_written(backend, V, y, W0, T0, residuals, **options):
    """CMMRefinementLoss at ``residuals`` as float64 numpy: the total and its gradient."""
    loss = CMMRefinementLoss(V, y, W0, T0, backend=backend, **options)
    total, grad = loss.value_and_grad(backend.asarray(residuals))
    return float(total), np.asarray(grad, dtype=np.float64)


#: Settings that single out the loss's terms, then all of them at once.
TERMS = {
    "cross-entropy": dict(zero_shot_weight=0.0, triplet_weight=0.0, alpha=0.0),
    "zero-shot": dict(zero_shot_weight=0.7, triplet_weight=0.0, alpha=0.0),
    "triplet": dict(zero_shot_weight=0.0, triplet_weight=0.8, alpha=0.0),
    "all": dict(zero_shot_weight=1.0, triplet_weight=0.5, alpha=0.3),
}


#: (n_samples, dim): the loss maps the shots as V W0 + V Delta with fewer shots than
#: dimensions and as V (W0 + Delta) otherwise; both sides and the boundary.
SHAPES = [(15, 5), (4, 5), (5, 5)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("terms", TERMS)
@pytest.mark.parametrize("train_text", [True, False])
@pytest.mark.parametrize("n, dim", SHAPES)
def test_refinement_loss_matches_loop(backend, terms, train_text, n, dim):
    rng, V, y, W0, T0 = _problem(n=n, dim=dim)
    options = dict(logit_scale=7.0, margin=0.2, **TERMS[terms])
    residuals = 0.2 * rng.randn(dim + 3 * train_text, dim)
    total, _ = _hand_written(BACKENDS[backend](np.float64), V, y, W0, T0, residuals,
                            train_text=train_text, **options)
    alpha = options.pop("alpha")
    W = W0 + residuals[:dim]
    T = T0 + residuals[dim:] if train_text else T0
    expected = (_refinement_reference(V, y, W, T, T0, **options)
                + alpha / 2 * np.sum(residuals**2))
    assert total == pytest.approx(expected, rel=1e-12)


def _autograd_reference(V, y, W0, T0, residuals, *, train_text, logit_scale, zero_shot_weight,
                        triplet_weight, margin, alpha):
    """The gradient of the plain expression, by autograd in float64."""
    P = torch.tensor(residuals, requires_grad=True)
    V_t, y_t, T0_t = torch.tensor(V), torch.tensor(y), torch.tensor(T0)
    T = T0_t + P[len(W0):] if train_text else T0_t
    cos = F.normalize(V_t @ (torch.tensor(W0) + P[: len(W0)]), dim=1) @ F.normalize(T, dim=1).T
    logits = logit_scale * cos + zero_shot_weight * logit_scale * (V_t @ T0_t.T)
    negative = torch.where(F.one_hot(y_t, len(T0)).bool(), -torch.inf, cos).argmax(dim=1)
    rows = torch.arange(len(y))
    hinge = torch.relu(margin - cos[rows, y_t] + cos[rows, negative])
    loss = (F.cross_entropy(logits, y_t) + triplet_weight * hinge.mean()
            + alpha / 2 * P.square().sum())
    loss.backward()
    return P.grad.numpy()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("terms", TERMS)
@pytest.mark.parametrize("train_text", [True, False])
@pytest.mark.parametrize("n, dim", SHAPES)
def test_hand_written_gradient_equals_autograds(backend, dtype, rtol, terms, train_text, n,
                                                dim):
    rng, V, y, W0, T0 = _problem(n=n, dim=dim)
    options = dict(logit_scale=7.0, margin=0.2, train_text=train_text, **TERMS[terms])
    residuals = 0.2 * rng.randn(dim + 3 * train_text, dim)
    _, grad = _hand_written(BACKENDS[backend](dtype), V, y, W0, T0, residuals, **options)
    expected = _autograd_reference(V, y, W0, T0, residuals, **options)
    assert np.abs(expected).max() > 0.01  # the premise: something to compare
    np.testing.assert_allclose(grad, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("train_text", [True, False])
@pytest.mark.parametrize("n, dim", SHAPES)
def test_refinement_loss_keeps_nothing_from_one_call_to_the_next(backend, train_text, n,
                                                                  dim):
    """The loss reuses its work arrays: a call after one at other residuals gives what a
    fresh loss gives, and the returned gradient is not overwritten by the next call."""
    rng, V, y, W0, T0 = _problem(n=n, dim=dim)
    arrays = BACKENDS[backend](np.float64)
    options = dict(train_text=train_text, logit_scale=7.0, margin=0.2, **TERMS["all"])
    first, second = (arrays.asarray(0.2 * rng.randn(dim + 3 * train_text, dim))
                     for _ in range(2))
    reused = CMMRefinementLoss(V, y, W0, T0, backend=arrays, **options)
    first_total, first_grad = reused.value_and_grad(first)
    kept = np.asarray(first_grad).copy()
    total, grad = reused.value_and_grad(second)
    fresh_total, fresh_grad = CMMRefinementLoss(V, y, W0, T0, backend=arrays,
                                                **options).value_and_grad(second)
    assert float(total) == float(fresh_total) != float(first_total)
    np.testing.assert_array_equal(np.asarray(grad), np.asarray(fresh_grad))
    np.testing.assert_array_equal(np.asarray(first_grad), kept)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("margin, active", [(1.0, False), (1.25, True)])
def test_a_hinge_at_exactly_zero_has_no_gradient(backend, margin, active):
    """A shot on its own prototype (cosine 1) and orthogonal to the other (cosine 0): the
    triplet's hinge is ``margin - 1``, so exactly 0 at margin 1, where (as autograd's relu)
    it adds nothing to the gradient; at margin 1.25 it does."""
    V, y = np.array([[1.0, 0.0]]), np.array([0])
    T0 = np.eye(2)
    arrays = BACKENDS[backend](np.float32)
    options = dict(train_text=True, logit_scale=3.0, zero_shot_weight=0.0, margin=margin,
                   alpha=0.0)
    residuals = np.zeros((4, 2))
    total, grad = _hand_written(arrays, V, y, np.eye(2), T0, residuals, triplet_weight=1.0,
                                **options)
    total_without, grad_without = _hand_written(arrays, V, y, np.eye(2), T0, residuals,
                                                triplet_weight=0.0, **options)
    assert total - total_without == pytest.approx(margin - 1.0, abs=1e-7)
    assert np.array_equal(grad, grad_without) != active


@pytest.mark.parametrize("backend", BACKENDS)
def test_refinement_loss_is_stable_for_large_logits(backend):
    """A logit scale of 1000: the exponentials of the raw logits overflow float32."""
    rng, V, y, W0, T0 = _problem(seed=9)
    options = dict(train_text=True, logit_scale=1000.0, zero_shot_weight=1.0,
                   triplet_weight=1.0, margin=0.1)
    residuals = np.zeros((8, 5))
    total, grad = _hand_written(BACKENDS[backend](np.float32), V, y, W0, T0, residuals,
                                alpha=0.0, **options)
    assert np.isfinite(grad).all()
    assert total == pytest.approx(_refinement_reference(V, y, W0, T0, T0, **{
        k: v for k, v in options.items() if k != "train_text"}), rel=1e-5)


@pytest.mark.parametrize("n, dim, in_span", [(4, 10, True), (5, 10, False), (2, 5, True),
                                             (3, 5, False)])
def test_the_map_is_trained_in_the_span_up_to_its_share_of_shots(n, dim, in_span):
    """``SPAN_MAX_SHARE`` shots per dimension (exactly, here) and fewer: ``C`` of n rows;
    more: ``Delta`` of dim rows. Never without ``in_span``."""
    assert SPAN_MAX_SHARE == 0.4  # the premise of the cases
    _, V, y, W0, T0 = _problem(n=n, dim=dim)
    options = dict(train_text=True, logit_scale=7.0, margin=0.2, **TERMS["all"])
    arrays = BACKENDS["numpy"](np.float64)
    loss = CMMRefinementLoss(V, y, W0, T0, backend=arrays, in_span=True, **options)
    assert loss.shape == ((n if in_span else dim) + len(T0), dim)
    assert CMMRefinementLoss(V, y, W0, T0, backend=arrays, in_span=False,
                             **options).shape == (dim + len(T0), dim)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("train_text", [True, False])
@pytest.mark.parametrize("n, dim, repeated", [(4, 10, False), (3, 10, False), (1, 5, False),
                                              (4, 10, True)])
def test_loss_in_the_span_is_the_full_loss_at_Q_C(backend, train_text, n, dim, repeated):
    """At ``P = [C; Delta_T]``: the full loss at ``[Q C; Delta_T]``, whose gradient lies
    in the span (``Q`` times ``C``'s); ``entries`` and ``residuals`` give
    ``[Q C; Delta_T]``. Also where a shot repeats another (the shots span fewer
    dimensions than there are shots)."""
    rng, V, y, W0, T0 = _problem(n=n, dim=dim)
    if repeated:
        V[1] = V[0]
    arrays = BACKENDS[backend](np.float64)
    options = dict(train_text=train_text, logit_scale=7.0, margin=0.2, **TERMS["all"])
    span = CMMRefinementLoss(V, y, W0, T0, backend=arrays, in_span=True, **options)
    Q = span.basis
    np.testing.assert_allclose(Q.T @ Q, np.eye(n), atol=1e-12)  # orthonormal columns
    np.testing.assert_allclose(Q @ (Q.T @ V.T), V.T, atol=1e-12)  # that span the shots
    P = 0.2 * rng.randn(*span.shape)
    full_residuals = np.vstack([Q @ P[:n], P[n:]])
    total, grad = _hand_written(arrays, V, y, W0, T0, full_residuals, **options)
    span_total, span_grad = span.value_and_grad(arrays.asarray(P))
    assert float(span_total) == pytest.approx(total, rel=1e-12)
    np.testing.assert_allclose(np.asarray(span_grad)[:n], Q.T @ grad[:dim], atol=1e-12)
    np.testing.assert_allclose(np.asarray(span_grad)[n:], grad[dim:], atol=1e-12)
    np.testing.assert_allclose(Q @ np.asarray(span_grad)[:n], grad[:dim], atol=1e-12)
    np.testing.assert_allclose(np.asarray(span.entries(arrays.asarray(P.reshape(-1)))),
                               full_residuals, atol=1e-12)
    np.testing.assert_allclose(span.residuals(P), full_residuals, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lbfgs_in_the_span_takes_the_full_losss_steps(backend):
    """L-BFGS on ``C``, its tolerances measuring ``Q C``, evaluates the losses that it
    evaluates on ``Delta`` and ends at the same map (float64)."""
    _, V, y, W0, T0 = _problem(n=4, dim=10)
    arrays = BACKENDS[backend](np.float64)
    options = dict(train_text=True, logit_scale=7.0, margin=0.2, **TERMS["all"])
    runs = []
    for in_span in (False, True):
        loss = CMMRefinementLoss(V, y, W0, T0, backend=arrays, in_span=in_span, **options)
        P = arrays.asarray(np.zeros(loss.shape))
        losses, n_iter = minimize_lbfgs(P, partial(loss.value_and_grad, P), max_iter=20,
                                        tol=1e-6, entries=loss.entries)
        runs.append((losses, n_iter, loss.residuals(to_numpy(P))))
    (full_losses, full_iter, full_P), (losses, n_iter, P) = runs
    assert n_iter == full_iter > 5 and len(losses) == len(full_losses)
    np.testing.assert_allclose(losses, full_losses, rtol=1e-10)
    np.testing.assert_allclose(P, full_P, atol=1e-9)
