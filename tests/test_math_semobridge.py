"""SeMoBridge's pure functions against slow, obvious references (loops, explicit SVD)."""

import math

import numpy as np
import pytest
import torch

from sklearn_cmm._math import semobridge_loss
from sklearn_cmm._math.semobridge_loss import (
    MIN_LOG_PROBA,
    RESHAPE_MIN_CLASSES,
    SeMoBridgeTLoss,
    ShotClasses,
    log_softmax_and_residual,
)
from sklearn_cmm._math.semobridge import (
    blend_accuracies,
    blend_contenders,
    bridge,
    bridge_prototypes,
    class_divergence,
    class_weights,
    loo_score_matrices,
    pinv_with_cutoff,
    pseudo_tokens,
    relative_cutoff,
    score_matrices,
    semobridge_logits,
    text_preimage,
    validation_folds,
    warmup_learning_rate,
)

from ._backends import BACKENDS


def unit(v):
    return v / math.sqrt(sum(x * x for x in v))


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def vec_mat(v, M):
    """Row vector times matrix, by loops."""
    return np.array([sum(v[i] * M[i, j] for i in range(M.shape[0])) for j in range(M.shape[1])])


def mean_rows(rows):
    rows = list(rows)
    return np.array([sum(r[j] for r in rows) / len(rows) for j in range(len(rows[0]))])


def log_softmax_at(logits, target):
    top = max(logits)
    return logits[target] - top - math.log(sum(math.exp(v - top) for v in logits))


def matrix_with_singular_values(rng, shape, singular_values):
    U = np.linalg.qr(rng.randn(shape[0], shape[0]))[0][:, : len(singular_values)]
    V = np.linalg.qr(rng.randn(shape[1], shape[1]))[0][:, : len(singular_values)]
    return (U * singular_values) @ V.T


@pytest.fixture
def problem():
    rng = np.random.RandomState(0)
    n_classes, dim, width = 4, 6, 5
    W = matrix_with_singular_values(rng, (width, dim), [2.5, 1.4, 0.9, 0.25, 0.1])
    y = np.array([0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3])
    f = 3.0 * rng.randn(len(y), dim) + 1.0
    T = rng.randn(n_classes, dim)
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    return rng, W, y, f, T, n_classes


def test_pinv_with_cutoff_matches_explicit_svd(problem):
    _, W, *_ = problem
    U, s, Vt = np.linalg.svd(W)
    for cutoff in [0.0, 0.3, 1.0]:
        expected = np.zeros((W.shape[1], W.shape[0]))
        for k in range(len(s)):
            if s[k] > cutoff:
                expected += np.outer(Vt[k], U[:, k]) / s[k]
        got = pinv_with_cutoff(W, cutoff)
        np.testing.assert_allclose(got, expected, atol=1e-12)
        assert np.linalg.matrix_rank(got) == int(np.sum(s > cutoff))
    np.testing.assert_allclose(pinv_with_cutoff(W, 0.0), np.linalg.pinv(W), atol=1e-10)
    assert not pinv_with_cutoff(W, 10.0).any()
    # rank 1: the other singular values are rounding, never inverted
    rank_one = np.outer(W[:, 0], W[0])
    for cutoff in (0.0, 1e-300):
        np.testing.assert_allclose(pinv_with_cutoff(rank_one, cutoff), np.linalg.pinv(rank_one),
                                   rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("width, dim, repeated_row", [
    (6, 6, False), (4, 7, False), (7, 4, False), (6, 6, True)])
def test_text_preimage_is_T_times_the_pseudo_inverse(width, dim, repeated_row):
    """Square, wide (CLIP's RN50: width below dim), tall, and of deficient rank (a row of
    ``W`` repeated): the pseudo-inverse's preimage, also for text outside ``W``'s rows."""
    rng = np.random.RandomState(3)
    W = rng.randn(width, dim)
    if repeated_row:
        W[1] = W[0]
    T = rng.randn(5, dim)
    expected = T @ np.linalg.pinv(W)
    np.testing.assert_allclose(text_preimage(T, W), expected, atol=1e-12)
    assert text_preimage(T, W).shape == (5, width)


@pytest.mark.parametrize("with_bias", [False, True])
def test_bridge_matches_loop(problem, with_bias):
    rng, W, y, f, *_ = problem
    W_pinv = pinv_with_cutoff(W, 0.3)
    bias = rng.randn(len(f), W.shape[0]) if with_bias else None
    expected = []
    for i in range(len(f)):
        token = vec_mat(f[i], W_pinv)
        if with_bias:
            token = token + bias[i]
        expected.append(vec_mat(unit(token), W))
    np.testing.assert_allclose(bridge(f, W_pinv, W, bias), np.array(expected), atol=1e-12)
    np.testing.assert_allclose(pseudo_tokens(f, W_pinv, bias) @ W, np.array(expected), atol=1e-12)


def test_bridge_prototypes_match_loop(problem):
    rng, W, y, f, T, n_classes = problem
    tokens = rng.randn(len(f), W.shape[0])
    F_hat, F_bar = bridge_prototypes(f, tokens, W, y, n_classes)
    for c in range(n_classes):
        members = [i for i in range(len(y)) if y[i] == c]
        f_hat = [vec_mat(tokens[i], W) for i in members]  # bridged one by one, then averaged
        np.testing.assert_allclose(F_hat[c], unit(mean_rows(f_hat)))
        np.testing.assert_allclose(F_bar[c], unit(mean_rows(f[i] for i in members)))


def test_class_weights_match_loop(problem):
    rng, W, y, f, T, n_classes = problem
    F_bar = rng.randn(n_classes, f.shape[1])
    F_bar /= np.linalg.norm(F_bar, axis=1, keepdims=True)
    for smoothness in [0.0, 0.7, 1.5]:
        expected = []
        for c in range(n_classes):
            scores = [dot(F_bar[c], T[j]) for j in range(n_classes)]
            p_cc = math.exp(scores[c]) / sum(math.exp(v) for v in scores)
            divergence = math.log2((1 + 1e-6) / (p_cc + 1e-6))
            expected.append(math.exp(smoothness * divergence))
        np.testing.assert_allclose(class_weights(F_bar, T, smoothness), expected, rtol=1e-12)
    np.testing.assert_allclose(class_weights(F_bar, T, 0.0), 1.0)


def test_score_matrices_match_loop(problem):
    rng, W, y, f, T, n_classes = problem
    f_hat = rng.randn(*f.shape)
    F_hat = np.array([unit(v) for v in rng.randn(n_classes, f.shape[1])])
    F_bar = np.array([unit(v) for v in rng.randn(n_classes, f.shape[1])])
    z1, z2, z3 = score_matrices(f, f_hat, T, F_hat, F_bar)
    for i in range(len(f)):
        for c in range(n_classes):
            assert z1[i, c] == pytest.approx(dot(unit(f[i]), T[c]))
            assert z2[i, c] == pytest.approx(dot(unit(f[i]), F_hat[c]))
            assert z3[i, c] == pytest.approx(dot(unit(f_hat[i]), F_bar[c]))


@pytest.mark.parametrize("text", [True, False])
def test_loo_score_matrices_match_loop(problem, text):
    rng, W, y, f, T, n_classes = problem
    f_hat = rng.randn(*f.shape)
    f_hat_shots = rng.randn(*f.shape)
    z1, z2, z3 = loo_score_matrices(f, f_hat, f_hat_shots, y, n_classes, T if text else None)

    def prototype(rows, c, without):
        members = [rows[k] for k in range(len(y)) if y[k] == c and k != without]
        return unit(mean_rows(members))

    for i in range(len(f)):
        for c in range(n_classes):
            left_out = i if c == y[i] else None
            zero_shot = T[c] if text else prototype([unit(r) for r in f], c, left_out)
            assert z1[i, c] == pytest.approx(dot(unit(f[i]), zero_shot))
            assert z2[i, c] == pytest.approx(dot(unit(f[i]), prototype(f_hat_shots, c, left_out)))
            assert z3[i, c] == pytest.approx(dot(unit(f_hat[i]), prototype(f, c, left_out)))


def test_loo_score_matrices_of_some_shots_from_their_pseudo_tokens(problem):
    # Scoring a subset of the shots, the bridged shots given as tokens times W, is the
    # full computation's rows.
    rng, W, y, f, T, n_classes = problem
    tokens = rng.randn(len(y), W.shape[0])
    f_hat = rng.randn(*f.shape)
    index = np.array([1, 5, 6, 10])
    for text in (T, None):
        full = loo_score_matrices(f, f_hat, tokens @ W, y, n_classes, text)
        part = loo_score_matrices(f, f_hat[index], tokens, y, n_classes, text, index,
                                  shots_projection=W)
        for a, b in zip(part, full):
            np.testing.assert_allclose(a, b[index])


def _blend_problem(seed, n_queries, n_classes, ties):
    rng = np.random.RandomState(seed)
    base = rng.uniform(-1, 1, (n_queries, n_classes))
    z = [np.clip(base + 0.3 * rng.randn(n_queries, n_classes), -1, 1) for _ in range(3)]
    divergence = rng.uniform(9, 10, n_classes)
    if ties:  # coarse values and duplicated classes: ties everywhere
        z = [np.round(np.concatenate([m, m[:, :3]], axis=1), 1) for m in z]
        divergence = np.round(np.concatenate([divergence, divergence[:3]]), 1)
    # Labels the scores mostly agree with, so that accuracies differ between blends.
    y = np.argmax(sum(z) + rng.randn(*z[0].shape), axis=1)
    return rng, z, divergence, y


def _reference_accuracy(z, divergence, y, candidate):
    weights = {k: v for k, v in candidate.items() if k != "smoothness"}
    w = np.exp(candidate["smoothness"] * divergence)
    return np.mean(np.argmax(semobridge_logits(*z, w, **weights), axis=1) == y)


BLEND_SPACE = {"smoothness": (0.0, 1.5), "alpha": (0.0, 10.0), "beta": (0.0, 10.0),
               "gamma": (0.0, 10.0), "lambda1": (0.0, 1.0), "lambda2": (0.0, 1.0),
               "lambda3": (0.0, 1.0)}
EDGE_BLENDS = [  # constant logits, a single term, zero sharpness with class weights
    dict(smoothness=0.0, alpha=0.0, beta=0.0, gamma=0.0, lambda1=1.0, lambda2=1.0, lambda3=1.0),
    dict(smoothness=0.5, alpha=0.0, beta=3.0, gamma=0.0, lambda1=0.0, lambda2=1.0, lambda3=0.0),
    dict(smoothness=0.0, alpha=2.0, beta=0.0, gamma=0.0, lambda1=1.0, lambda2=0.0, lambda3=0.0),
    dict(smoothness=0.7, alpha=0.0, beta=0.0, gamma=0.0, lambda1=0.3, lambda2=0.5, lambda3=0.0),
]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("max_rounds", [1, 3, 16])
def test_blend_accuracies_are_the_full_argmax_accuracies(ties, max_rounds):
    from sklearn_cmm._math.search import random_candidates

    for seed in range(4):
        rng, z, divergence, y = _blend_problem(seed, 30, 25, ties)
        candidates = random_candidates(BLEND_SPACE, EDGE_BLENDS[0], 40, rng) + EDGE_BLENDS
        parts = [(*z, divergence, y), (*[m[:7] for m in z], divergence[::-1].copy(), y[:7])]
        expected = [
            (30 * _reference_accuracy(z, divergence, y, c)
             + 7 * _reference_accuracy([m[:7] for m in z], parts[1][3], y[:7], c)) / 37
            for c in candidates
        ]
        got = blend_accuracies(parts, candidates, max_rounds=max_rounds)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
        assert len(set(expected)) > 3  # the check has teeth


def test_blend_contenders_keep_every_winner_and_drop_most_classes():
    from sklearn_cmm._math.search import random_candidates

    rng, z, divergence, y = _blend_problem(7, 40, 200, ties=False)
    keep = blend_contenders(*z, divergence)
    assert keep.sum(axis=1).max() < 60  # most of the 200 classes cannot win
    for candidate in random_candidates(BLEND_SPACE, EDGE_BLENDS[1], 100, rng):
        weights = {k: v for k, v in candidate.items() if k != "smoothness"}
        w = np.exp(candidate["smoothness"] * divergence)
        winners = np.argmax(semobridge_logits(*z, w, **weights), axis=1)
        assert keep[np.arange(40), winners].all()


def test_class_divergence_is_the_log_of_the_weights(problem):
    rng, W, y, f, T, n_classes = problem
    F_bar = l2_rows(rng.randn(n_classes, f.shape[1]))
    np.testing.assert_allclose(np.log(class_weights(F_bar, T, 0.7)),
                               0.7 * class_divergence(F_bar, T), rtol=1e-12)


def l2_rows(M):
    return M / np.linalg.norm(M, axis=1, keepdims=True)


def test_loo_scores_of_a_single_shot_class_are_zero(problem):
    rng, W, y, f, T, n_classes = problem
    y = np.array([0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3])  # class 0 has one shot
    z1, z2, z3 = loo_score_matrices(f, f, f, y, n_classes)
    assert z1[0, 0] == z2[0, 0] == z3[0, 0] == 0.0


def test_semobridge_logits_match_loop(problem):
    rng, *_ = problem
    z1, z2, z3 = rng.uniform(-1, 1, (3, 5, 4))
    w = rng.uniform(0.5, 3, 4)
    params = dict(alpha=2.0, beta=7.5, gamma=0.3, lambda1=0.4, lambda2=0.9, lambda3=0.2)
    got = semobridge_logits(z1, z2, z3, w, **params)
    for i in range(5):
        for c in range(4):
            expected = (
                params["lambda1"] * math.exp(-params["alpha"] * (1 - z1[i, c]))
                + params["lambda2"] * w[c] * math.exp(-params["beta"] * (1 - z2[i, c]))
                + params["lambda3"] * w[c] * math.exp(-params["gamma"] * (1 - z3[i, c]))
            )
            assert got[i, c] == pytest.approx(expected, rel=1e-12)


def reference_t_loss(f, y, W_pinv, W, bias, T, text_pre, n_classes, weights):
    """SeMoBridge-T's loss, term by term from the method notes, with loops."""
    tokens = []
    for i in range(len(f)):
        token = vec_mat(f[i], W_pinv)
        if bias is not None:
            token = token + bias[y[i]]
        tokens.append(unit(token))
    f_hat = [vec_mat(e, W) for e in tokens]
    members = [[i for i in range(len(y)) if y[i] == c] for c in range(n_classes)]
    F_hat = [unit(mean_rows(f_hat[i] for i in m)) for m in members]
    E = [unit(mean_rows(tokens[i] for i in m)) for m in members]
    T = [unit(t) for t in T]
    text_pre = [unit(t) for t in text_pre]

    def ce(rows, targets):
        return -sum(log_softmax_at(r, t) for r, t in zip(rows, targets)) / len(rows)

    img = ce(
        [[100 * dot(unit(f[i]), F_hat[c]) for c in range(n_classes)] for i in range(len(f))], y
    )
    txtp = ce([[dot(F_hat[c], T[j]) for j in range(n_classes)] for c in range(n_classes)],
              range(n_classes))
    txte = ce([[dot(E[c], text_pre[j]) for j in range(n_classes)] for c in range(n_classes)],
              range(n_classes))
    consistency = ce(
        [[dot(unit(f_hat[i]), F_hat[c]) for c in range(n_classes)] for i in range(len(f))], y
    )
    if bias is None:
        bias_norm = 0.0
    else:
        norms = [math.sqrt(dot(b, b)) for b in bias]
        mean = sum(norms) / len(norms)
        bias_norm = sum((v - mean) ** 2 for v in norms) / len(norms)
    terms = dict(img=img, txtp=txtp, txte=txte, consistency=consistency, bias_norm=bias_norm)
    total = (
        weights[0] * img + weights[1] * (txtp + txte) / 2 + weights[2] * consistency
        + weights[3] * bias_norm
    )
    return total, terms


#: Rows of the problem's shots: all 11, 5 (every class, one twice), or 8 (two a class:
#: class sums without padding).
SHOTS = {"all": slice(None), "few": [0, 2, 5, 7, 8], "balanced": [0, 1, 2, 3, 5, 6, 7, 8]}


def hand_written_t_loss(backend, f, y, W_pinv, W, bias, T, text_pre, **options):
    """SeMoBridgeTLoss at (W_pinv, bias) as float64 numpy: the total, d W_pinv, d bias."""
    loss = SeMoBridgeTLoss(f, y, W, T, text_pre, backend=backend,
                           class_bias=bias is not None, **options)
    # the class sums of the bridged shots are projected sums where the width (5) is
    # below the number of shots (11 or 8), sums of the projected shots otherwise (5)
    assert loss.project_sums == (len(f) > W.shape[0])
    stacked = W_pinv if bias is None else np.vstack([W_pinv, bias])
    total, grad = loss.value_and_grad(backend.asarray(stacked))
    grad = np.asarray(grad, dtype=np.float64)
    return float(total), grad[: len(W_pinv)], None if bias is None else grad[len(W_pinv):]


TERM_WEIGHTS = {  # image, text, consistency, bias-norm weights that single out terms
    "img": (1, 0, 0, 0), "text": (0, 1, 0, 0), "consistency": (0, 0, 1, 0),
    "bias_norm": (0, 0, 0, 1), "defaults": (0.5, 0.5, 0.1, 0.1), "mixed": (1.0, 0.2, 0.7, 2.0),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("weights", TERM_WEIGHTS)
@pytest.mark.parametrize("shots", ["all", "few"])
def test_semobridge_t_loss_matches_formula(problem, backend, with_bias, weights, shots):
    rng, W, y, f, T, n_classes = problem
    y, f = y[SHOTS[shots]], f[SHOTS[shots]]
    W_pinv = pinv_with_cutoff(W, 0.3) + 0.1 * rng.randn(W.shape[1], W.shape[0])
    bias = rng.randn(n_classes, W.shape[0]) if with_bias else None
    text_pre = rng.randn(n_classes, W.shape[0])
    weights = TERM_WEIGHTS[weights]
    expected_total, terms = reference_t_loss(
        f, y, W_pinv, W, bias, T, text_pre, n_classes, weights
    )
    total, *_ = hand_written_t_loss(
        BACKENDS[backend](np.float64), f, y, W_pinv, W, bias, 3.0 * T, text_pre,
        image_weight=weights[0], text_weight=weights[1], consistency_weight=weights[2],
        bias_norm_weight=weights[3],
    )
    assert total == pytest.approx(expected_total, rel=1e-10, abs=1e-12)
    assert min(terms["img"], terms["txtp"], terms["txte"], terms["consistency"]) > 0.1
    assert (terms["bias_norm"] > 0) == with_bias


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_softmax_residual_holds_no_subnormal_floats(backend):
    """Softmax minus the targets over the classes (rows), weighted by column, with
    probabilities too small for a normal float32 raised to exp(MIN_LOG_PROBA) rather
    than subnormal."""
    arrays = BACKENDS[backend](np.float32)
    scores = np.array([[0.0, 3.0], [-95.0, 1.0], [-200.0, 2.0]])  # classes x columns
    targets = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    weights = np.array([0.5, 2.0])
    log_p, residual = log_softmax_and_residual(
        arrays.asarray(scores), arrays.asarray(targets * weights),
        arrays.asarray(weights))
    log_p, residual = np.asarray(log_p), np.asarray(residual)
    expected = np.exp(scores - scores.max(axis=0)) / np.exp(scores - scores.max(axis=0)).sum(0)
    np.testing.assert_allclose(log_p, np.log(expected), rtol=1e-6)
    small = expected < math.exp(MIN_LOG_PROBA)
    assert small.sum() == 2  # the premise: two probabilities below the floor
    np.testing.assert_allclose(residual[~small], ((expected - targets) * weights)[~small],
                               rtol=1e-6)
    np.testing.assert_allclose(residual[small], (math.exp(MIN_LOG_PROBA) * weights)[[0, 0]],
                               rtol=1e-6)
    tiny = np.finfo(np.float32).tiny
    assert not np.any((residual != 0) & (np.abs(residual) < tiny))


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_softmax_residual_goes_to_the_work_array(backend):
    """With ``out``, the residual is written there, equal to a fresh one's; the work
    array's earlier values take no part."""
    arrays = BACKENDS[backend](np.float32)
    rng = np.random.RandomState(0)
    scores, weights = 5 * rng.randn(4, 3), np.array([0.5, 2.0, 1.0])
    targets = np.eye(4)[:, [0, 2, 3]] * weights
    args = (arrays.asarray(targets), arrays.asarray(weights))
    fresh_log_p, fresh = log_softmax_and_residual(arrays.asarray(scores), *args)
    out = arrays.asarray(np.full_like(scores, 7.0))
    log_p, residual = log_softmax_and_residual(arrays.asarray(scores), *args, out=out)
    assert residual is out
    np.testing.assert_array_equal(np.asarray(residual), np.asarray(fresh))
    np.testing.assert_array_equal(np.asarray(log_p), np.asarray(fresh_log_p))


def autograd_t_loss(f, y, W_pinv, W, bias, T, text_pre, *, n_classes, image_weight=0.5,
                    text_weight=0.5, consistency_weight=0.1, bias_norm_weight=0.1,
                    image_logit_scale=100.0):
    """The loss in torch's own operations, for autograd: the hand-written gradient's
    reference."""
    from torch.nn.functional import cross_entropy, normalize as unit_rows

    tokens = f @ W_pinv + (0 if bias is None else bias[y])
    e = unit_rows(tokens, dim=1)
    f_hat = e @ W
    counts = torch.bincount(y, minlength=n_classes).to(f.dtype)[:, None]

    def class_mean(rows):
        return torch.zeros(n_classes, rows.shape[1], dtype=rows.dtype).index_add(0, y, rows) / counts

    F_hat, E = unit_rows(class_mean(f_hat), dim=1), unit_rows(class_mean(e), dim=1)
    classes = torch.arange(n_classes)
    total = (
        image_weight * cross_entropy(image_logit_scale * unit_rows(f, dim=1) @ F_hat.T, y)
        + text_weight / 2 * (cross_entropy(F_hat @ unit_rows(T, dim=1).T, classes)
                             + cross_entropy(E @ unit_rows(text_pre, dim=1).T, classes))
        + consistency_weight * cross_entropy(unit_rows(f_hat, dim=1) @ F_hat.T, y)
    )
    if bias is not None:
        total = total + bias_norm_weight * torch.var(torch.linalg.vector_norm(bias, dim=1),
                                                     correction=0)
    return total


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias_kind", ["none", "zero", "random"])
@pytest.mark.parametrize("shots", SHOTS)
def test_hand_written_gradient_equals_autograds(problem, backend, dtype, bias_kind, shots):
    rng, W, y, f, T, n_classes = problem
    y, f = y[SHOTS[shots]], f[SHOTS[shots]]
    W_pinv = pinv_with_cutoff(W, 0.3) + 0.1 * rng.randn(W.shape[1], W.shape[0])
    bias = {"none": None, "zero": np.zeros((n_classes, W.shape[0])),
            "random": 0.3 * rng.randn(n_classes, W.shape[0])}[bias_kind]
    text_pre = rng.randn(n_classes, W.shape[0])
    options = dict(image_weight=0.7, text_weight=0.4, consistency_weight=0.3,
                   bias_norm_weight=0.2, image_logit_scale=30.0)
    mine = hand_written_t_loss(BACKENDS[backend](dtype), f, y, W_pinv, W, bias, T, text_pre,
                               **options)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    params = [t(W_pinv).requires_grad_()] + ([] if bias is None else [t(bias).requires_grad_()])
    total = autograd_t_loss(t(f), torch.as_tensor(y), params[0], t(W),
                            params[1] if bias is not None else None, t(T), t(text_pre),
                            n_classes=n_classes, **options)
    total.backward()
    reference = [total.item()] + [p.grad.numpy() for p in params]
    tolerance = 1e-10 if dtype == np.float64 else 1e-5
    assert mine[0] == pytest.approx(reference[0], rel=tolerance)
    for got, expected in zip([g for g in mine[1:] if g is not None], reference[1:]):
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got, expected, atol=tolerance * max(scale, 1e-3))
    if bias_kind == "zero":  # finite, and the bias gets a gradient at zero
        assert np.isfinite(mine[2]).all() and np.abs(mine[2]).sum() > 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shots", SHOTS)
def test_loss_keeps_nothing_from_one_call_to_the_next(problem, backend, shots):
    """The loss reuses its work arrays: a call after one at other parameters gives what
    a fresh loss gives, and the returned gradient is not overwritten by the next call."""
    rng, W, y, f, T, n_classes = problem
    y, f = y[SHOTS[shots]], f[SHOTS[shots]]
    make = BACKENDS[backend](np.float64)
    text_pre = rng.randn(n_classes, W.shape[0])
    start = np.vstack([pinv_with_cutoff(W, 0.3), np.zeros((n_classes, W.shape[0]))])
    stacked = [make.asarray(start + 0.3 * rng.randn(*start.shape)) for _ in range(2)]

    def loss():
        return SeMoBridgeTLoss(f, y, W, T, text_pre, backend=make, class_bias=True)

    reused = loss()
    first_total, first_grad = reused.value_and_grad(stacked[0])
    kept = np.asarray(first_grad).copy()
    second = reused.value_and_grad(stacked[1])
    fresh = loss().value_and_grad(stacked[1])
    assert float(second[0]) == float(fresh[0]) != float(first_total)
    np.testing.assert_array_equal(np.asarray(second[1]), np.asarray(fresh[1]))
    np.testing.assert_array_equal(np.asarray(first_grad), kept)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case, n_classes, by_reshape", [
    ("equal", RESHAPE_MIN_CLASSES, True), ("equal", RESHAPE_MIN_CLASSES - 1, False),
    ("unequal", RESHAPE_MIN_CLASSES, False), ("unsorted", RESHAPE_MIN_CLASSES, False)])
def test_shot_classes_sum_rows_per_class(backend, case, n_classes, by_reshape):
    """Sums over reshaped shots from RESHAPE_MIN_CLASSES classes of equal sizes in class
    order, products below it or otherwise; the sums of both are the loops'."""
    y = np.repeat(np.arange(n_classes), 3)
    if case == "unequal":
        y = np.append(y, n_classes - 1)
    if case == "unsorted":
        y = y[::-1].copy()
    rows = np.random.default_rng(3).standard_normal((len(y), 4))
    make = BACKENDS[backend](np.float64)
    classes = ShotClasses(y, n_classes, make)
    assert (classes.onehot_T is None) == by_reshape
    expected = np.array([sum((rows[i] for i in range(len(y)) if y[i] == c), np.zeros(4))
                         for c in range(n_classes)])
    out = make.asarray(np.full((n_classes, 4), np.nan))
    got = classes.sums(make.asarray(rows), out=out)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(got))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("width", [5, 9])  # below and above the number of shots, 8
def test_loss_by_reshaped_class_sums_is_the_products(problem, backend, with_bias, width,
                                                     monkeypatch):
    """From RESHAPE_MIN_CLASSES classes of equal sizes the class sums, and the bias's
    gradient, are sums over the reshaped shots: the same loss and gradient (float64) as
    by the one-hot products, shots given in any order."""
    rng, _, y, f, T, n_classes = problem
    y, f = y[SHOTS["balanced"]][::-1], f[SHOTS["balanced"]][::-1]  # against class order
    W = rng.randn(width, f.shape[1])
    stacked = np.linalg.pinv(W) + 0.1 * rng.randn(f.shape[1], width)
    if with_bias:
        stacked = np.vstack([stacked, 0.3 * rng.randn(n_classes, width)])
    make = BACKENDS[backend](np.float64)
    text_pre = rng.randn(n_classes, width)
    results = {}
    for minimum in (n_classes, n_classes + 1):
        monkeypatch.setattr(semobridge_loss, "RESHAPE_MIN_CLASSES", minimum)
        loss = SeMoBridgeTLoss(f, y, W, T, text_pre, backend=make, class_bias=with_bias)
        assert (loss.classes.onehot_T is None) == (minimum == n_classes)
        assert loss.bias_grad_by_sums == (minimum == n_classes)
        results[minimum] = loss.value_and_grad(make.asarray(stacked))
    (by_sums, grad_by_sums), (by_products, grad_by_products) = results.values()
    assert float(by_sums) == pytest.approx(float(by_products), rel=1e-12)
    np.testing.assert_allclose(np.asarray(grad_by_sums), np.asarray(grad_by_products),
                               rtol=1e-10, atol=1e-13)


def test_pinv_cutoff_is_strict_at_the_threshold():
    W = np.diag([2.0, 1.0, 0.5, 0.25])
    assert np.linalg.matrix_rank(pinv_with_cutoff(W, 0.5)) == 2  # 0.5 itself is dropped
    assert np.linalg.matrix_rank(pinv_with_cutoff(W, np.nextafter(0.5, 0))) == 3
    assert relative_cutoff(W, 0.25) == pytest.approx(0.5, rel=1e-15)
    assert np.linalg.matrix_rank(pinv_with_cutoff(W, relative_cutoff(W, 0.2499))) == 3


def test_relative_cutoff_is_a_fraction_of_the_largest_singular_value(problem):
    _, W, *_ = problem
    assert relative_cutoff(W, 0.1) == pytest.approx(0.1 * 2.5, rel=1e-12)


def dassl_linear_warmup(step, base_lr, warmup_epoch, min_lr):
    """Dassl's LinearWarmupScheduler.get_lr with last_epoch = step, then a constant rate."""
    if step >= warmup_epoch:
        return base_lr
    if step == 0:
        return min_lr
    return base_lr * step / warmup_epoch


def test_warmup_learning_rate_is_dassls():
    got = [warmup_learning_rate(t, 1e-2, 4, 1e-5) for t in range(7)]
    assert got == [1e-5, 2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2, 1e-2]
    for t in range(600):
        assert warmup_learning_rate(t, 1.5e-4, 500, 1e-5) == dassl_linear_warmup(
            t, 1.5e-4, 500, 1e-5
        )
    assert [warmup_learning_rate(t, 0.1, 0, 1e-5) for t in range(3)] == [0.1, 0.1, 0.1]


def test_validation_folds_split_every_class_in_halves():
    # class c has c + 1 shots (class 0 a single one), shuffled; class 5 has none
    y = np.random.RandomState(1).permutation(np.repeat(np.arange(5), np.arange(1, 6)))
    fold = validation_folds(y, 6, np.random.RandomState(0))
    assert fold[y == 0].tolist() == [-1]
    for c in range(1, 5):
        counts = [np.sum(fold[y == c] == k) for k in (0, 1)]
        assert counts == [(c + 2) // 2, (c + 1) // 2]
    again = validation_folds(y, 6, np.random.RandomState(0))
    np.testing.assert_array_equal(fold, again)
    other = [validation_folds(y, 6, np.random.RandomState(s)) for s in range(1, 6)]
    assert any(not np.array_equal(fold, o) for o in other)  # the draw is random
