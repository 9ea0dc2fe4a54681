import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sklearn_cmm._math.cmm import cmm_logits, map_to_text, ridge_map_to_prototypes
from sklearn_cmm._math.cmm_loss import (
    _cross_entropy_triplet_and_grad,
    cmm_refinement_loss,
    hardest_negative_triplet_loss,
    hardest_negatives,
)


def _unit(A):
    return A / np.linalg.norm(A, axis=-1, keepdims=True)


@pytest.mark.parametrize("n_samples, dim", [(5, 12), (40, 6)])
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


def _triplet_loop(anchors, prototypes, y, margin):
    total = 0.0
    for i in range(len(y)):
        a = anchors[i] / np.linalg.norm(anchors[i])
        sims = [a @ t / np.linalg.norm(t) for t in prototypes]
        hardest = max(sims[c] for c in range(len(prototypes)) if c != y[i])
        total += max(0.0, margin - sims[y[i]] + hardest)
    return total / len(y)


@pytest.mark.parametrize("margin", [0.0, 0.2, 1.5])
def test_triplet_loss_matches_loop(margin):
    rng = np.random.RandomState(5)
    anchors, prototypes = rng.randn(20, 6), rng.randn(4, 6)
    y = rng.randint(0, 4, 20)
    cosines = _unit(anchors) @ _unit(prototypes).T
    loss = hardest_negative_triplet_loss(torch.tensor(cosines), torch.tensor(y), margin)
    assert loss.item() == pytest.approx(_triplet_loop(anchors, prototypes, y, margin), rel=1e-12)


def test_hardest_negatives_match_loop():
    rng = np.random.RandomState(6)
    cosines, y = rng.rand(30, 5), rng.randint(0, 5, 30)
    negatives = hardest_negatives(torch.tensor(cosines), torch.tensor(y)).numpy()
    for i in range(30):
        wrong = [c for c in range(5) if c != y[i]]
        assert negatives[i] == max(wrong, key=lambda c: cosines[i, c])


@pytest.mark.parametrize("with_zero_shot", [True, False])
@pytest.mark.parametrize("triplet_weight", [0.0, 0.8])
def test_fused_loss_and_gradient_match_autograd(with_zero_shot, triplet_weight):
    rng = np.random.RandomState(7)
    cosines = torch.tensor(rng.uniform(-1, 1, (25, 6)))
    y = torch.tensor(rng.randint(0, 6, 25))
    zero_shot = torch.tensor(rng.randn(25, 6) * 3) if with_zero_shot else None
    fused, fused_grad = _cross_entropy_triplet_and_grad(
        cosines.clone(), y, zero_shot, logit_scale=10.0, triplet_weight=triplet_weight,
        margin=0.3,
    )
    plain_in = cosines.clone().requires_grad_()
    logits = 10.0 * plain_in + (0 if zero_shot is None else zero_shot)
    plain = F.cross_entropy(logits, y) + triplet_weight * hardest_negative_triplet_loss(
        plain_in, y, 0.3
    )
    plain.backward()
    assert fused.item() == pytest.approx(plain.item(), rel=1e-12)
    torch.testing.assert_close(fused_grad, plain_in.grad, rtol=1e-10, atol=1e-12)


def test_fused_loss_is_stable_for_large_logits():
    cosines = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    loss, grad = _cross_entropy_triplet_and_grad(
        cosines, torch.tensor([1, 1]), None, logit_scale=1000.0, triplet_weight=1.0, margin=0.1
    )
    # CE: sample 0 is off by 2000, sample 1 right; triplet: only sample 0 (2.1) is active.
    assert loss.item() == pytest.approx(2000.0 / 2 + 2.1 / 2, rel=1e-6)
    assert torch.isfinite(grad).all()


def _refinement_reference(V, y, W, T, zero_shot_logits, logit_scale, triplet_weight, margin):
    n, n_classes = len(y), len(T)
    total = 0.0
    for i in range(n):
        mapped = V[i] @ W
        cos = np.array([mapped @ t / (np.linalg.norm(mapped) * np.linalg.norm(t)) for t in T])
        logits = logit_scale * cos + zero_shot_logits[i]
        total += np.logaddexp.reduce(logits) - logits[y[i]]
        hardest = max(cos[c] for c in range(n_classes) if c != y[i])
        total += triplet_weight * max(0.0, margin - cos[y[i]] + hardest)
    return total / n


def test_refinement_loss_matches_loop_and_its_gradient_autograd():
    rng = np.random.RandomState(8)
    V, y = _unit(rng.randn(15, 5)), rng.randint(0, 3, 15)
    W, T, Z = np.eye(5) + 0.3 * rng.randn(5, 5), rng.randn(3, 5), rng.randn(15, 3)
    W_t, T_t = torch.tensor(W, requires_grad=True), torch.tensor(T, requires_grad=True)
    kwargs = dict(logit_scale=7.0, triplet_weight=0.5, margin=0.2)
    V_t, y_t, Z_t = torch.tensor(V), torch.tensor(y), torch.tensor(Z)
    loss = cmm_refinement_loss(V_t, y_t, W_t, T_t, Z_t, **kwargs)
    assert loss.item() == pytest.approx(_refinement_reference(V, y, W, T, Z, **kwargs), rel=1e-12)
    loss.backward()
    W_ref, T_ref = torch.tensor(W, requires_grad=True), torch.tensor(T, requires_grad=True)
    cos = F.normalize(torch.tensor(V) @ W_ref, dim=1) @ F.normalize(T_ref, dim=1).T
    ref = F.cross_entropy(7.0 * cos + torch.tensor(Z), torch.tensor(y))
    ref = ref + 0.5 * hardest_negative_triplet_loss(cos, torch.tensor(y), 0.2)
    ref.backward()
    torch.testing.assert_close(W_t.grad, W_ref.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(T_t.grad, T_ref.grad, rtol=1e-10, atol=1e-12)
