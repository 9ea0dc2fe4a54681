"""SeMoBridgeClassifier: the method notes' formulas, its modes, search and scikit-learn use."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from sklearn_cmm import SeMoBridgeClassifier, ZeroShotClassifier
from sklearn_cmm._math import semobridge_loss
from sklearn_cmm.model_selection import FewShotSplit, draw_shots

from ._backends import train_on_torch
from .test_math_semobridge import autograd_t_loss


def modality_gap_problem(seed, n_classes=10, dim=24, n_per_class=30, text_noise=1.0,
                         image_noise=1.5):
    """Images and class texts in shifted cones, with a CLIP-like text projection.

    ``W = U diag(s) V^T`` has half its singular values in [1, 2] and half in [0.02, 0.2]
    (below the 0.3 cut-off). Class directions ``mu_c`` and the text offset live in the span
    of the strong right singular vectors (text embeddings are ``x @ W``); the images carry
    an extra offset ``g_i`` in the weak directions, which the cut-off bridge removes. Texts
    are noisy, so few-shot images help; image norms vary, as CLIP's do.
    """
    rng = np.random.RandomState(seed)
    U = np.linalg.qr(rng.randn(dim, dim))[0]
    V = np.linalg.qr(rng.randn(dim, dim))[0]
    k = dim // 2
    W = (U * np.r_[rng.uniform(1, 2, k), rng.uniform(0.02, 0.2, dim - k)]) @ V.T
    strong, weak = V[:, :k], V[:, k:]
    mu = rng.randn(n_classes, k) @ strong.T
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    g_t = 0.5 * strong @ rng.randn(k) / np.sqrt(k)
    g_i = 1.5 * weak @ rng.randn(dim - k) / np.sqrt(dim - k)
    text = mu + g_t + text_noise * (rng.randn(n_classes, k) @ strong.T) / np.sqrt(k)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = mu[y] + g_i + image_noise * rng.randn(len(y), dim) / np.sqrt(dim)
    X *= rng.uniform(5, 15, (len(y), 1))
    return X, y, text, W


def explicit_pinv(W, cutoff):
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    inverse = np.zeros((W.shape[1], W.shape[0]))
    for k in range(len(s)):
        if s[k] > cutoff:
            inverse += np.outer(Vt[k], U[:, k]) / s[k]
    return inverse


def normalize(A):
    return A / np.linalg.norm(A, axis=-1, keepdims=True)


def notes_logits(X_train, y_train, text, W, X_test, p, W_pinv=None, bias=None):
    """The final logits of shared/methods/semobridge.md, line by line."""
    classes = np.unique(y_train)
    if W_pinv is None:
        W_pinv = explicit_pinv(W, p["pinv_cutoff"])                   # 1. W_pinv = pinv(W)
    shot_bias = 0.0 if bias is None else bias[np.searchsorted(classes, y_train)]
    f_hat_shots = normalize(X_train @ W_pinv + shot_bias) @ W         # 2. f_hat = e @ W (s=1)
    F_hat = normalize(np.array([f_hat_shots[y_train == c].mean(0) for c in classes]))  # 3.
    F_bar = normalize(np.array([X_train[y_train == c].mean(0) for c in classes]))
    T = normalize(text)
    q_bar = normalize(X_test)
    z1 = q_bar @ T.T
    z2 = q_bar @ F_hat.T
    z3 = normalize(normalize(X_test @ W_pinv) @ W) @ F_bar.T          # query bridged, no bias
    logits_pc = F_bar @ T.T
    p_c = np.exp(logits_pc) / np.exp(logits_pc).sum(1, keepdims=True)
    D = np.log2((1 + 1e-6) / (np.diag(p_c) + 1e-6))
    w = np.exp(p["smoothness"] * D)
    return (
        p["lambda1"] * np.exp(-p["alpha"] * (1 - z1))
        + p["lambda2"] * w * np.exp(-p["beta"] * (1 - z2))
        + p["lambda3"] * w * np.exp(-p["gamma"] * (1 - z3))
    )


BLEND = dict(alpha=2.5, beta=4.0, gamma=0.7, lambda1=0.3, lambda2=0.9, lambda3=0.6,
             smoothness=0.8, pinv_cutoff=0.3)


@pytest.fixture(scope="module")
def data():
    X, y, text, W = modality_gap_problem(0, n_classes=5, n_per_class=12)
    train, test = draw_shots(y, 4, 0)
    return X[train], y[train], X[test], y[test], text, W


def fitted(data, **params):
    X_train, y_train, _, _, text, W = data
    clf = SeMoBridgeClassifier(text_features=text, text_projection=W, text_encoder=None, **params)
    return clf.fit(X_train, y_train)


def test_decision_function_equals_the_notes_formula(data):
    X_train, y_train, X_test, _, text, W = data
    clf = fitted(data, search=None, **BLEND)
    expected = notes_logits(X_train, y_train, text, W, X_test, BLEND)
    np.testing.assert_allclose(clf.decision_function(X_test), expected, rtol=1e-5, atol=1e-8)
    assert clf.bridge_ == "pinv" and clf.prototype_source_ == "text"
    # The bridge is not the identity here: the cut-off drops half of W's directions.
    assert np.linalg.matrix_rank(clf.projection_pinv_) == W.shape[0] // 2


def test_trained_decision_function_equals_the_notes_formula(data):
    X_train, y_train, X_test, _, text, W = data
    clf = fitted(data, train=True, early_stopping=False, max_iter=30, warmup_iter=5,
                 learning_rate=1e-2, search=None, **BLEND)
    assert clf.class_bias_.shape == (5, W.shape[0]) and np.abs(clf.class_bias_).sum() > 0
    assert not np.allclose(clf.projection_pinv_, explicit_pinv(W, 0.3))
    expected = notes_logits(
        X_train, y_train, text, W, X_test, BLEND, clf.projection_pinv_, clf.class_bias_
    )
    np.testing.assert_allclose(clf.decision_function(X_test), expected, rtol=1e-5, atol=1e-8)


def test_transform_is_the_normalised_bridge(data):
    _, _, X_test, _, text, W = data
    clf = fitted(data)
    expected = normalize(normalize(X_test @ explicit_pinv(W, 0.3)) @ W)
    np.testing.assert_allclose(clf.transform(X_test), expected, atol=1e-10)
    X_train, y_train = data[0], data[1]
    np.testing.assert_allclose(clf.fit_transform(X_train, y_train), clf.transform(X_train))


def notes_t_loss_at_init(X, y, W, T, text_pre, cutoff=0.3):
    """SeMoBridge-T's total loss of the notes at W_pinv = pinv(W), b = 0."""
    classes = np.unique(y)
    W_pinv = explicit_pinv(W, cutoff)
    e = normalize(X @ W_pinv)
    f_hat = e @ W
    F_hat = normalize(np.array([f_hat[y == c].mean(0) for c in classes]))
    E = normalize(np.array([e[y == c].mean(0) for c in classes]))
    target = np.searchsorted(classes, y)

    def cross_entropy(logits, targets):
        log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        return -log_p[np.arange(len(targets)), targets].mean()

    img = cross_entropy(100 * normalize(X) @ F_hat.T, target)
    txtp = cross_entropy(F_hat @ normalize(T).T, np.arange(len(classes)))
    txte = cross_entropy(E @ normalize(text_pre).T, np.arange(len(classes)))
    consistency = cross_entropy(normalize(f_hat) @ F_hat.T, target)
    bias_norm = 0.0  # the variance of ||b_c|| with b = 0
    return 0.5 * img + 0.5 * (txtp + txte) / 2 + 0.1 * consistency + 0.1 * bias_norm


def test_loss_at_step_zero_equals_the_notes_formula(data):
    X_train, y_train, _, _, text, W = data
    clf = fitted(data, train=True, early_stopping=False, max_iter=2, image_logit_scale=100.0)
    # text_projection given: pre-projection text is the exact preimage T @ pinv(W).
    expected = notes_t_loss_at_init(X_train, y_train, W, text, normalize(text) @ np.linalg.pinv(W))
    assert clf.loss_curve_.shape == (2,) and clf.n_iter_ == 2
    assert clf.loss_curve_[0] == pytest.approx(expected, rel=1e-5)


class FakeCLIPText:
    """A text encoder with CLIP's projection interface: text = pre-projection @ W."""

    def __init__(self, vectors, W, seed=0):
        self.text_projection = W
        rng = np.random.RandomState(seed)
        pinv = np.linalg.pinv(W)
        # each class's pre-projection features: a preimage of its vector, plus prompt noise
        self.pre = {name: v @ pinv for name, v in vectors.items()}
        self.noise = 0.05 * rng.randn(8, W.shape[0])
        self.calls = 0

    def encode_text_pre_projection(self, prompts):
        self.calls += 1
        return np.array([
            self.pre[p.split("|")[1]] + self.noise[int(p.split("|")[0])] for p in prompts
        ])

    def encode_text(self, prompts):
        return self.encode_text_pre_projection(prompts) @ self.text_projection


def test_projection_and_pre_projection_come_from_the_encoder(data):
    X_train, y_train, X_test, _, text, W = data
    templates = ("0|{}", "1|{}", "2|{}")
    names = {c: f"class{c}" for c in range(5)}
    encoder = FakeCLIPText({names[c]: text[c] for c in range(5)}, W)
    clf = SeMoBridgeClassifier(
        text_encoder=encoder, class_names=names, templates=templates, train=True, max_iter=1,
        early_stopping=False, image_logit_scale=100.0,
    ).fit(X_train, y_train)
    assert clf.bridge_ == "pinv"
    np.testing.assert_array_equal(clf.text_projection_, W)
    prompts = [t.format(names[c]) for c in range(5) for t in templates]
    T = normalize(normalize(encoder.encode_text(prompts)).reshape(5, 3, -1).mean(1))
    np.testing.assert_allclose(clf.text_prototypes_, T, atol=1e-12)
    pre = encoder.encode_text_pre_projection(prompts).reshape(5, 3, -1).mean(1)
    assert not np.allclose(normalize(pre), normalize(T @ np.linalg.pinv(W)), atol=1e-4)
    expected = notes_t_loss_at_init(X_train, y_train, W, T, pre)
    assert clf.loss_curve_[0] == pytest.approx(expected, rel=1e-5)
    # Given a projection, the encoder is not asked for one (nor for pre-projection text).
    encoder.calls = 0
    SeMoBridgeClassifier(text_features=text, text_projection=W, text_encoder=encoder).fit(
        X_train, y_train
    )
    assert encoder.calls == 0


def test_the_fitted_projection_is_a_copy_of_the_given_one(data):
    X_train, y_train, X_test, _, text, W = data
    W = np.array(W, dtype=np.float64)  # what check_array would keep as it is
    given = SeMoBridgeClassifier(text_features=text, text_projection=W, text_encoder=None,
                                 search=None).fit(X_train, y_train)
    encoder = FakeCLIPText({f"class{c}": text[c] for c in range(5)}, W)
    encoded = SeMoBridgeClassifier(text_encoder=encoder, templates=("0|{}",),
                                   class_names={c: f"class{c}" for c in range(5)},
                                   search=None).fit(X_train, y_train)
    before = given.predict_proba(X_test)
    W *= -3  # the user's array (and the encoder's) changes after the fit
    for clf in (given, encoded):
        assert not np.shares_memory(clf.text_projection_, W)
    np.testing.assert_array_equal(given.predict_proba(X_test), before)


def test_text_without_projection_is_an_error(data):
    X_train, y_train, _, _, text, _ = data
    clf = SeMoBridgeClassifier(text_features=text, text_encoder=None)
    with pytest.raises(ValueError, match="text projection"):
        clf.fit(X_train, y_train)


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(text_projection=np.ones((4, 3))), "expected \\(width, 24\\)"),
        (dict(pinv_cutoff=100.0), "not below any singular value"),
    ],
)
def test_bad_projection(data, params, match):
    X_train, y_train, _, _, text, W = data
    clf = SeMoBridgeClassifier(text_features=text, text_encoder=None, text_projection=W)
    with pytest.raises(ValueError, match=match):
        clf.set_params(**params).fit(X_train, y_train)


def test_text_free_mode_is_an_image_prototype_blend(data):
    X_train, y_train, X_test, _, _, _ = data
    clf = SeMoBridgeClassifier(text_encoder=None).fit(X_train, y_train)
    assert clf.bridge_ == "identity" and clf.prototype_source_ == "image_means"
    np.testing.assert_allclose(clf.transform(X_test), normalize(X_test))
    # z1 = z2 (both the normalised mean of the normalised shots), z3 against raw means.
    np.testing.assert_allclose(clf.bridged_prototypes_, clf.text_prototypes_)
    means = normalize(np.array([normalize(X_train[y_train == c]).mean(0) for c in range(5)]))
    np.testing.assert_allclose(clf.text_prototypes_, means)
    assert clf.score(X_test, data[3]) > 0.5
    trained = SeMoBridgeClassifier(text_encoder=None, train=True, max_iter=5,
                                   early_stopping=False).fit(X_train, y_train)
    assert trained.bridge_ == "identity" and np.isfinite(trained.loss_curve_).all()


def test_projection_without_text_bridges_to_image_prototypes(data):
    X_train, y_train, X_test, _, _, W = data
    clf = SeMoBridgeClassifier(text_encoder=None, text_projection=W).fit(X_train, y_train)
    assert clf.bridge_ == "pinv" and clf.prototype_source_ == "image_means"
    np.testing.assert_allclose(
        clf.transform(X_test), normalize(normalize(X_test @ explicit_pinv(W, 0.3)) @ W)
    )


def test_binary_decision_function_is_the_logit_difference(data):
    X_train, y_train, X_test, _, text, W = data
    keep = y_train < 2
    clf = SeMoBridgeClassifier(text_features=text[:2], text_projection=W, text_encoder=None,
                               **BLEND).fit(X_train[keep], y_train[keep])
    logits = notes_logits(X_train[keep], y_train[keep], text[:2], W, X_test, BLEND)
    np.testing.assert_allclose(
        clf.decision_function(X_test), logits[:, 1] - logits[:, 0], rtol=1e-5, atol=1e-8
    )


def held_out_accuracies(make, seeds, shots, **problem):
    accuracies = []
    for seed in seeds:
        X, y, text, W = modality_gap_problem(seed, **problem)
        train, test = draw_shots(y, shots, seed)
        clf = make(text, W).fit(X[train], y[train])
        accuracies.append(clf.score(X[test], y[test]))
    return np.array(accuracies)


def test_semobridge_beats_zero_shot_and_needs_its_bridge():
    seeds = range(5)

    def semobridge(projection):
        return lambda text, W: SeMoBridgeClassifier(
            text_features=text, text_encoder=None, text_projection=projection(W),
            random_state=0,
        )

    bridged = held_out_accuracies(semobridge(lambda W: W), seeds, 4)
    zero_shot = held_out_accuracies(
        lambda text, W: ZeroShotClassifier(text_features=text, text_encoder=None), seeds, 4
    )
    unbridged = held_out_accuracies(semobridge(lambda W: np.eye(len(W))), seeds, 4)
    assert bridged.mean() > zero_shot.mean() + 0.1
    # The cut-off bridge removes the images' offset in W's weak directions (no seed loses).
    assert bridged.mean() > unbridged.mean() and (bridged >= unbridged).all()


def test_search_cv_uses_only_the_shots_and_helps_with_noisy_text():
    seeds, problem = range(10), dict(text_noise=2.0, n_per_class=20)

    def make(**params):
        return lambda text, W: SeMoBridgeClassifier(
            text_features=text, text_projection=W, text_encoder=None, random_state=0, **params
        )

    searched = held_out_accuracies(make(search="cv", n_search_trials=100), seeds, 8, **problem)
    defaults = held_out_accuracies(make(), seeds, 8, **problem)
    assert searched.mean() >= defaults.mean()


def test_search_cv_chooses_in_the_search_space(data):
    X_train, y_train, X_test, _, text, W = data
    clf = fitted(data, search="cv", n_search_trials=50, random_state=0)
    chosen = {name: getattr(clf, name + "_") for name in
              ["smoothness", "alpha", "beta", "gamma", "lambda1", "lambda2", "lambda3"]}
    assert 0 <= chosen["smoothness"] <= 1.5
    assert all(0 <= chosen[n] <= 10 for n in ["alpha", "beta", "gamma"])
    assert all(0 <= chosen[n] <= 1 for n in ["lambda1", "lambda2", "lambda3"])
    assert 0 <= clf.search_score_ <= 1
    # The chosen blend is what predicts.
    expected = notes_logits(X_train, y_train, text, W, X_test, {**chosen, "pinv_cutoff": 0.3})
    np.testing.assert_allclose(clf.decision_function(X_test), expected, rtol=1e-5, atol=1e-8)
    same = fitted(data, search="cv", n_search_trials=50, random_state=0)
    assert {n: getattr(same, n + "_") for n in chosen} == chosen
    # One trial: the parameters themselves.
    one = fitted(data, search="cv", n_search_trials=1, alpha=3.0)
    assert one.alpha_ == 3.0 and one.smoothness_ == 0.01


def test_search_after_training_uses_the_trained_bridge(data):
    X_train, y_train, X_test, _, text, W = data
    clf = fitted(data, train=True, early_stopping=False, max_iter=20, learning_rate=1e-2,
                 warmup_iter=0, search="cv", n_search_trials=30, random_state=0)
    assert clf.search_score_ is not None and clf.class_bias_ is not None
    chosen = {n: getattr(clf, n + "_") for n in BLEND if n != "pinv_cutoff"}
    expected = notes_logits(X_train, y_train, text, W, X_test, {**chosen, "pinv_cutoff": 0.3},
                            clf.projection_pinv_, clf.class_bias_)
    np.testing.assert_allclose(clf.decision_function(X_test), expected, rtol=1e-5, atol=1e-8)


def test_search_chooses_the_brute_force_best_blend(data):
    # Leave-one-out score matrices by loops, every candidate's logits in full, the first
    # best: the estimator's choice and score must be exactly that.
    from scipy.special import softmax

    from sklearn_cmm._math.search import random_candidates
    from sklearn_cmm.semobridge import SEARCH_SPACE

    X_train, y_train, _, _, text, W = data
    n_trials = 60
    clf = fitted(data, search="cv", n_search_trials=n_trials, random_state=0)
    defaults = {name: getattr(SeMoBridgeClassifier(), name) for name in SEARCH_SPACE}
    candidates = random_candidates(SEARCH_SPACE, defaults, n_trials, np.random.RandomState(0))
    bridged = normalize(X_train @ explicit_pinv(W, 0.3)) @ W
    z = np.zeros((3, len(y_train), 5))
    for i in range(len(y_train)):
        for c in range(5):
            members = (y_train == c) & (np.arange(len(y_train)) != i)
            z[0, i, c] = normalize(X_train[i]) @ text[c]
            z[1, i, c] = normalize(X_train[i]) @ normalize(bridged[members].mean(0))
            z[2, i, c] = normalize(bridged[i]) @ normalize(X_train[members].mean(0))
    F_bar = normalize(np.array([X_train[y_train == c].mean(0) for c in range(5)]))
    divergence = np.log2((1 + 1e-6) / (np.diag(softmax(F_bar @ text.T, axis=1)) + 1e-6))
    accuracies = []
    for cand in candidates:
        w = np.exp(cand["smoothness"] * divergence)
        logits = cand["lambda1"] * np.exp(-cand["alpha"] * (1 - z[0])) + w * (
            cand["lambda2"] * np.exp(-cand["beta"] * (1 - z[1]))
            + cand["lambda3"] * np.exp(-cand["gamma"] * (1 - z[2])))
        accuracies.append(np.mean(np.argmax(logits, axis=1) == y_train))
    best = candidates[int(np.argmax(accuracies))]
    assert {name: getattr(clf, name + "_") for name in SEARCH_SPACE} == best
    assert clf.search_score_ == pytest.approx(max(accuracies), abs=1e-12)
    assert len(set(accuracies)) > 3  # the candidates differ, so the check has teeth


@pytest.mark.parametrize("above_chance", [0.0, 1e-9])
def test_search_without_a_blend_above_chance_falls_back_to_zero_shot(data, monkeypatch,
                                                                   above_chance):
    # Every candidate scores the same on the held-out shots: exactly chance (1 / 5 classes)
    # or less is no evidence for any blend, a hair above it keeps the first candidate.
    import warnings

    from sklearn_cmm import semobridge

    score = 1 / 5 + above_chance
    monkeypatch.setattr(semobridge, "_search_accuracies",
                        lambda parts, candidates: np.full(len(candidates), score))
    X_train, y_train, X_test, _, text, _ = data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf = fitted(data, search="cv", n_search_trials=10, random_state=0, alpha=0.0)
    fell_back = [w for w in caught if "falls back to its zero-shot term" in str(w.message)]
    assert clf.search_score_ == score
    if above_chance:
        assert not fell_back
        assert (clf.alpha_, clf.lambda2_, clf.lambda3_) == (0.0, 1.0, 1.0)  # the defaults
        return
    assert len(fell_back) == 1 and fell_back[0].category is UserWarning
    # the image terms are off and the zero-shot term ranks (alpha 0 would make it constant)
    assert (clf.lambda2_, clf.lambda3_, clf.alpha_, clf.lambda1_) == (0.0, 0.0, 1.0, 1.0)
    zero_shot = ZeroShotClassifier(text_features=text, text_encoder=None).fit(X_train, y_train)
    np.testing.assert_array_equal(clf.predict(X_test), zero_shot.predict(X_test))


@pytest.mark.parametrize("n_shots", [1, 3])
@pytest.mark.filterwarnings("ignore:search='cv' found no blend")
def test_zero_shot_accuracy_is_the_search_score_of_the_zero_shot_blend(monkeypatch, n_shots):
    from sklearn_cmm import semobridge
    from sklearn_cmm.protocol.synthetic import synthetic_problem

    parts = []
    original = semobridge._search_accuracies

    def recording(parts_, candidates):
        parts.append(parts_)
        return original(parts_, candidates)

    monkeypatch.setattr(semobridge, "_search_accuracies", recording)
    problem = synthetic_problem(12, n_shots, 1, dim=32, seed=1)
    SeMoBridgeClassifier(text_features=problem["text_features"], text_encoder=None,
                         text_projection=problem["text_projection"], search="cv",
                         n_search_trials=5, random_state=0, calibration=None).fit(
        problem["train_features"], problem["train_labels"])
    blend = semobridge._zero_shot_blend({name: 1.0 for name in semobridge.SEARCH_SPACE})
    expected = original(parts[0], [blend])[0]
    assert 0 < expected < 1  # the check has teeth: some held-out shots right, some wrong
    assert semobridge._zero_shot_accuracy(parts[0]) == expected


@pytest.mark.parametrize("above_floor", [0.0, 1e-9])
def test_search_falls_back_when_the_best_blend_keeps_a_quarter_of_zero_shot(data, monkeypatch,
                                                                          above_floor):
    # The zero-shot blend (no image terms) scores 0.96 on the held-out shots, every
    # candidate a quarter of that (above chance, 1 / 5): that or less falls back.
    import warnings

    from sklearn_cmm import semobridge

    zero_shot_score = 0.96
    score = semobridge.FALLBACK_SCORE_RATIO * zero_shot_score + above_floor
    assert score > 1 / 5
    scored = []

    def accuracies(parts, candidates):
        scored.append(parts)
        return np.full(len(candidates), score)

    def zero_shot_accuracy(parts):
        scored.append(parts)
        return zero_shot_score

    monkeypatch.setattr(semobridge, "_search_accuracies", accuracies)
    monkeypatch.setattr(semobridge, "_zero_shot_accuracy", zero_shot_accuracy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf = fitted(data, search="cv", n_search_trials=10, random_state=0, alpha=3.0,
                     lambda1=0.5)
    fell_back = [w for w in caught if "falls back to its zero-shot term" in str(w.message)]
    assert scored[0] is scored[1]  # both on the same held-out shots
    assert clf.search_score_ == score
    assert len(fell_back) == (not above_floor)
    # the first candidate (the given values) wins the tie; the fallback is the zero-shot
    # term at the default alpha = lambda1 = 1, whatever the candidate's
    expected = (3.0, 0.5, 1.0, 1.0) if above_floor else (1.0, 1.0, 0.0, 0.0)
    assert (clf.alpha_, clf.lambda1_, clf.lambda2_, clf.lambda3_) == expected


@pytest.mark.parametrize("train", [False, True])
def test_search_scores_a_reproducible_subset_of_held_out_shots_at_scale(data, monkeypatch, train):
    from sklearn_cmm import semobridge

    seen = []
    original = semobridge._search_accuracies

    def recording(parts, candidates):
        seen.append(sum(len(part[3]) for part in parts))
        return original(parts, candidates)

    monkeypatch.setattr(semobridge, "_search_accuracies", recording)
    monkeypatch.setattr(semobridge, "MAX_HELD_OUT", 7)
    params = dict(search="cv", n_search_trials=20, random_state=0)
    if train:  # the validation folds' held-out shots are subsampled the same way
        params.update(train=True, max_iter=50, validation_interval=25, warmup_iter=0,
                      learning_rate=1e-2)
    clf = fitted(data, **params)
    assert seen and all(n == 7 for n in seen)
    assert 7 * clf.search_score_ == pytest.approx(round(7 * clf.search_score_))
    again = fitted(data, **params)
    assert again.search_score_ == clf.search_score_ and again.alpha_ == clf.alpha_
    assert again.temperature_ == clf.temperature_
    monkeypatch.setattr(semobridge, "MAX_HELD_OUT", 1000)
    seen.clear()
    fitted(data, **params)
    assert seen and all(n == len(data[1]) for n in seen)  # all shots when few


def test_plain_fit_without_calibration_scores_no_held_out_shots(data, monkeypatch):
    from sklearn_cmm import semobridge

    def fail(*args, **kwargs):
        raise AssertionError("held-out scores computed for nothing")

    monkeypatch.setattr(semobridge, "loo_score_matrices", fail)
    assert fitted(data, calibration=None, search=None).temperature_ == 1.0
    for params in ({"search": None}, {"calibration": None}):  # each needs them
        with pytest.raises(AssertionError, match="for nothing"):
            fitted(data, **params)


def test_grid_search_over_shots_and_alpha():
    X, y, text, W = modality_gap_problem(1, n_classes=4, n_per_class=10)
    search = GridSearchCV(
        SeMoBridgeClassifier(text_features=text, text_projection=W, text_encoder=None,
                             random_state=0),
        {"n_shots": [1, 2], "alpha": [1, 5]},
        cv=FewShotSplit(n_shots=3, n_splits=2, random_state=0),
    ).fit(X, y)
    assert search.best_params_["n_shots"] in (1, 2) and search.best_params_["alpha"] in (1, 5)
    assert search.best_estimator_.predict(X).shape == y.shape


def test_training_lowers_the_loss_without_bias(data):
    clf = fitted(data, train=True, early_stopping=False, class_bias=False, max_iter=40,
                 warmup_iter=10,
                 learning_rate=5e-3, device="cpu")
    assert clf.class_bias_ is None
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]


def test_fits_are_deterministic_and_pickle(data):
    X_test = data[2]
    validated = dict(train=True, max_iter=20, validation_interval=5, learning_rate=1e-2,
                     search="cv", n_search_trials=20, random_state=3, n_shots=3)
    first, second = fitted(data, **validated), fitted(data, **validated)
    np.testing.assert_array_equal(first.decision_function(X_test),
                                  second.decision_function(X_test))
    params = dict(validated, early_stopping=False, max_iter=10)
    first, second = fitted(data, **params), fitted(data, **params)
    np.testing.assert_array_equal(first.decision_function(X_test),
                                  second.decision_function(X_test))
    for name in ["projection_pinv_", "class_bias_", "loss_curve_"]:
        assert type(getattr(first, name)) is np.ndarray
    restored = pickle.loads(pickle.dumps(first))
    np.testing.assert_array_equal(restored.predict_proba(X_test), first.predict_proba(X_test))
    np.testing.assert_array_equal(clone(first).get_params()["text_projection"], data[5])


def test_verbose_shows_a_progress_bar(data, capsys):
    fitted(data, train=True, max_iter=3, verbose=True)
    assert "SeMoBridge-T" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_an_error(data):
    with pytest.raises(ValueError, match="CUDA is not available"):
        fitted(data, train=True, max_iter=1, device="cuda")


def test_float32_input_matches_float64(data):
    # float32 features take a float32 product for the pseudo tokens (speed); the
    # fitted model must still agree with the float64 one to float32 precision.
    X_train, y_train, X_test, _, text, W = data
    params = {"text_features": text, "text_projection": W, "text_encoder": None,
              "random_state": 0}
    a = SeMoBridgeClassifier(**params).fit(X_train, y_train)
    b = SeMoBridgeClassifier(**params).fit(X_train.astype(np.float32), y_train)
    np.testing.assert_allclose(b.bridged_prototypes_, a.bridged_prototypes_, atol=1e-5)
    np.testing.assert_allclose(b.decision_function(X_test), a.decision_function(X_test),
                               rtol=1e-5, atol=1e-5)


def test_training_steps_follow_dassls_warmup(data, monkeypatch):
    """The learning rate of each step, and that it is the one AdamW applies."""
    from sklearn_cmm import _semobridge_training as training

    rates = []
    original = training.lockstep
    monkeypatch.setattr(training, "lockstep",
                        lambda optimizer, runs, lr: (rates.append(lr),
                                                     original(optimizer, runs, lr)))
    clf = fitted(data, train=True, early_stopping=False, max_iter=6, warmup_iter=4,
                 learning_rate=1e-2, image_logit_scale=30.0)
    assert rates == [1e-5, 2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2]
    # The same steps by hand, as the training ran before its gradient was written out:
    # autograd through torch's operations and AdamW's plain (unfused) step.
    X_train, y_train, _, _, text, W = data

    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    pinv = t(explicit_pinv(W, 0.3)).requires_grad_()
    bias = torch.zeros(5, W.shape[0], requires_grad=True)
    optimizer = torch.optim.AdamW([pinv, bias], lr=1.0, weight_decay=0.01, foreach=False)
    for lr in [1e-5, 2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2]:
        optimizer.param_groups[0]["lr"] = lr
        optimizer.zero_grad()
        autograd_t_loss(t(X_train), torch.as_tensor(y_train), pinv, t(W), bias, t(text),
                        t(normalize(text) @ np.linalg.pinv(W)), n_classes=5,
                        image_logit_scale=30.0).backward()
        optimizer.step()
    np.testing.assert_allclose(clf.projection_pinv_, pinv.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(clf.class_bias_, bias.detach().numpy(), atol=1e-5)


def test_relative_cutoff_keeps_the_directions_above_a_fraction_of_the_largest(data):
    W = data[5]
    s = np.linalg.svd(W, compute_uv=False)
    fraction = (s[3] + s[4]) / 2 / s[0]  # between the 4th and 5th singular values
    clf = fitted(data, pinv_cutoff=fraction, pinv_cutoff_relative=True)
    np.testing.assert_allclose(clf.projection_pinv_, explicit_pinv(W, fraction * s[0]),
                               atol=1e-10)
    assert np.linalg.matrix_rank(clf.projection_pinv_) == 4


class Spy:
    """Records the shots every SeMoBridge-T optimisation is built on."""

    def __init__(self, monkeypatch):
        from sklearn_cmm import _semobridge_training as training

        self.rows = []
        original = training.BridgeTraining.__init__

        def init(training, X, *args, **kwargs):
            self.rows.append({tuple(r) for r in X})
            original(training, X, *args, **kwargs)

        monkeypatch.setattr(training.BridgeTraining, "__init__", init)


def test_early_stopping_validates_on_shots_it_did_not_train_on(data, monkeypatch):
    X_train, y_train, X_test, _, text, W = data
    spy = Spy(monkeypatch)
    clf = fitted(data, train=True, max_iter=60, validation_interval=25, warmup_iter=0,
                 n_iter_no_change=None,
                 learning_rate=3e-2, search="cv", n_search_trials=20, random_state=2)
    everything = {tuple(r) for r in X_train}
    first, second = spy.rows[:2]
    assert not first & second and first | second == everything  # two disjoint folds
    # checkpoints at steps 0, 25, 50 and the last, 60; the best is the first maximum
    assert clf.validation_scores_.shape == (4,) and clf.n_iter_ == 60
    steps = [0, 25, 50, 60]
    assert clf.best_iter_ == steps[int(np.argmax(clf.validation_scores_))]
    assert clf.best_iter_ > 0  # on this problem training helps (the premise of the test)
    # the final bridge: all shots, best_iter_ steps, as a plain training of that length
    assert len(spy.rows) == 3 and spy.rows[2] == everything
    plain = fitted(data, train=True, early_stopping=False, max_iter=clf.best_iter_,
                   warmup_iter=0, learning_rate=3e-2, image_logit_scale=clf.image_logit_scale_)
    np.testing.assert_array_equal(clf.projection_pinv_, plain.projection_pinv_)
    assert clf.loss_curve_.shape == (clf.best_iter_,)
    expected = notes_logits(
        X_train, y_train, text, W, X_test,
        {**{n: getattr(clf, n + "_") for n in BLEND if n != "pinv_cutoff"}, "pinv_cutoff": 0.3},
        clf.projection_pinv_, clf.class_bias_,
    )
    np.testing.assert_allclose(clf.decision_function(X_test), expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("xp", [np, torch])
def test_lockstep_trainings_equal_separate_ones(data, xp):
    from sklearn_cmm import _semobridge_training as training
    from sklearn_cmm._torch import ArrayBackend

    X_train, y_train, _, _, text, W = data
    clf = fitted(data, train=True, early_stopping=False, max_iter=1)
    halves = [np.arange(0, 20, 2), np.arange(1, 20, 2)]
    backend = ArrayBackend(torch.device("cpu"), xp)

    def trainings():
        return [training.BridgeTraining(X_train[rows], y_train[rows], W,
                                        explicit_pinv(W, 0.3), text, text, clf, backend,
                                        image_logit_scale=clf.image_logit_scale_)
                for rows in halves]

    together = trainings()
    schedule = dict(learning_rate=1e-2, weight_decay=clf.weight_decay, warmup_iter=0,
                    validation_interval=clf.validation_interval)
    training.run_steps(together, 5, **schedule)
    for k, alone in enumerate(trainings()):
        training.run_steps([alone], 5, **schedule)
        for a, b in zip(alone.parameters(), together[k].parameters()):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


#: A short SeMoBridge-T fit with validation, checkpoints and the blend's search.
VALIDATED_TRAINING = dict(train=True, max_iter=120, validation_interval=30,
                          n_iter_no_change=None, learning_rate=1e-2, search="cv",
                          n_search_trials=10, random_state=0)


def assert_same_training(fit, reference):
    """The same kept checkpoint (a trained one), validation scores, parameters and losses."""
    assert reference.best_iter_ > 0  # the premise: a trained bridge is kept
    assert fit.best_iter_ == reference.best_iter_
    np.testing.assert_array_equal(fit.validation_scores_, reference.validation_scores_)
    for name in ("projection_pinv_", "class_bias_", "loss_curve_"):
        np.testing.assert_allclose(getattr(fit, name), getattr(reference, name),
                                   rtol=1e-5, atol=1e-6)


def test_numpy_training_equals_torchs(data, monkeypatch):
    """The CPU trains on numpy arrays, a GPU on torch tensors: the same fit either way
    (here torch on the CPU), validation and checkpoints included."""
    on_numpy = fitted(data, **VALIDATED_TRAINING)
    train_on_torch(monkeypatch)
    on_torch = fitted(data, **VALIDATED_TRAINING)
    assert_same_training(on_torch, on_numpy)
    X_test = data[2]
    np.testing.assert_allclose(on_torch.predict_proba(X_test), on_numpy.predict_proba(X_test),
                               atol=1e-5)


def test_training_by_reshaped_class_sums_equals_by_products(data, monkeypatch):
    """From RESHAPE_MIN_CLASSES classes of equal sizes the training's class sums are sums
    over the reshaped shots (here 5 classes of 4 shots, halves of 2 in the validation
    folds; the shots shuffled, the loss takes them in class order): the same fit as by
    one-hot products, validation and checkpoints included."""
    X_train, y_train, *rest = data
    shuffled = np.random.default_rng(1).permutation(len(y_train))  # keeps a trained step
    data = (X_train[shuffled], y_train[shuffled], *rest)
    by_products = fitted(data, **VALIDATED_TRAINING)
    monkeypatch.setattr(semobridge_loss, "RESHAPE_MIN_CLASSES", 1)
    by_reshape = []
    original_init = semobridge_loss.ShotClasses.__init__

    def recording(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        by_reshape.append(self.onehot_T is None)

    monkeypatch.setattr(semobridge_loss.ShotClasses, "__init__", recording)
    by_sums = fitted(data, **VALIDATED_TRAINING)
    assert len(by_reshape) >= 2 and all(by_reshape)  # the folds' losses and the final one
    assert_same_training(by_sums, by_products)


@pytest.mark.parametrize("max_held_out", [1000, 7])  # all shots scored; a random 7
def test_untrained_checkpoint_is_the_closed_form(data, monkeypatch, max_held_out):
    # A learning rate too small to change a prediction: every checkpoint ties, the first
    # (step 0) is kept, and the model is the closed form with its leave-one-out search,
    # on the same random shots when they are subsampled.
    from sklearn_cmm import semobridge

    monkeypatch.setattr(semobridge, "MAX_HELD_OUT", max_held_out)
    spy = Spy(monkeypatch)
    params = dict(search="cv", n_search_trials=30, random_state=0)
    trained = fitted(data, train=True, max_iter=40, validation_interval=20,
                     learning_rate=1e-12, **params)
    assert trained.best_iter_ == 0 and trained.class_bias_ is None
    assert np.ptp(trained.validation_scores_) == 0 and len(spy.rows) == 2  # no final run
    closed = fitted(data, **params)
    np.testing.assert_array_equal(trained.decision_function(data[2]),
                                  closed.decision_function(data[2]))
    np.testing.assert_array_equal(trained.predict_proba(data[2]), closed.predict_proba(data[2]))


def test_n_iter_no_change_stops_the_validation_training(data):
    clf = fitted(data, train=True, max_iter=1000, validation_interval=10, n_iter_no_change=2,
                 learning_rate=1e-12)
    # all checkpoints tie: the best is step 0, and two more checkpoints end the training
    assert clf.n_iter_ == 20 and clf.validation_scores_.shape == (3,) and clf.best_iter_ == 0


def test_single_shot_classes_are_trained_on_and_never_validated(data, monkeypatch):
    X_train, y_train = data[0], data[1]
    keep = np.r_[np.flatnonzero(y_train == 0)[:1], np.flatnonzero(y_train != 0)]
    spy = Spy(monkeypatch)
    SeMoBridgeClassifier(text_features=data[4], text_projection=data[5], text_encoder=None,
                         train=True, max_iter=5, random_state=0).fit(X_train[keep], y_train[keep])
    lone = tuple(X_train[keep[0]])
    assert lone in spy.rows[0] and lone in spy.rows[1]


def test_image_logit_scale_auto_calibrates_the_zero_shot_scores(data):
    from sklearn_cmm._math.calibration import fit_temperature

    X_train, y_train, _, _, text, _ = data
    clf = fitted(data, train=True, max_iter=1)
    cosines = normalize(X_train) @ normalize(text).T
    expected = 1 / fit_temperature(cosines, y_train, log_bounds=(np.log(1e-3), 0.0))
    assert clf.image_logit_scale_ == pytest.approx(expected, rel=1e-9)
    assert fitted(data, train=True, max_iter=1, image_logit_scale=7.0).image_logit_scale_ == 7.0


def test_one_shot_per_class_gives_the_closed_form(data):
    X_train, y_train = data[0], data[1]
    one = np.r_[[np.flatnonzero(y_train == c)[0] for c in range(5)]]
    params = dict(text_features=data[4], text_projection=data[5], text_encoder=None,
                  search="cv", n_search_trials=20, random_state=0)
    trained = SeMoBridgeClassifier(train=True, **params).fit(X_train[one], y_train[one])
    assert trained.best_iter_ == 0 and trained.n_iter_ == 0
    closed = SeMoBridgeClassifier(**params).fit(X_train[one], y_train[one])
    np.testing.assert_array_equal(trained.decision_function(data[2]),
                                  closed.decision_function(data[2]))


def test_probabilities_are_the_calibrated_softmax_of_the_logits(data):
    from scipy.special import softmax

    from sklearn_cmm._math.calibration import fit_temperature, laplace_smoothing

    X_train, y_train, X_test, _, text, W = data
    clf = fitted(data, search=None, **BLEND)
    logits = clf.decision_function(X_test)
    np.testing.assert_allclose(clf.predict_proba(X_test),
                               softmax(logits / clf.temperature_, axis=1), rtol=1e-10)
    np.testing.assert_allclose(clf.predict_log_proba(X_test),
                               np.log(clf.predict_proba(X_test)), rtol=1e-10)
    # the scale calibrates the leave-one-out logits of the shots, a shot left out of every
    # class: shot i (the r-th of its class) leaves itself out of its class's prototypes
    # and the r-th shot of every other class out of theirs (4 shots of 5 classes: r mod 4;
    # the class weights w_c from all shots, as in the search)
    W_pinv, p = explicit_pinv(W, 0.3), BLEND
    F_bar = normalize(np.array([X_train[y_train == c].mean(0) for c in range(5)]))
    p_c = np.exp(F_bar @ normalize(text).T)
    p_c /= p_c.sum(1, keepdims=True)
    w = np.exp(p["smoothness"] * np.log2((1 + 1e-6) / (np.diag(p_c) + 1e-6)))
    loo = np.empty((len(y_train), 5))
    for i in range(len(y_train)):
        rank = np.sum(y_train[:i] == y_train[i])
        q = normalize(X_train[i])
        for c in range(5):
            members = np.flatnonzero(y_train == c)
            others = np.delete(members, rank)  # i itself in its own class
            F_hat_c = normalize((normalize(X_train[others] @ W_pinv) @ W).mean(0))
            F_bar_c = normalize(X_train[others].mean(0))
            z1, z2 = q @ normalize(text[c]), q @ F_hat_c
            z3 = normalize(normalize(X_train[i] @ W_pinv) @ W) @ F_bar_c
            loo[i, c] = p["lambda1"] * np.exp(-p["alpha"] * (1 - z1)) + w[c] * (
                p["lambda2"] * np.exp(-p["beta"] * (1 - z2))
                + p["lambda3"] * np.exp(-p["gamma"] * (1 - z3)))
    expected = fit_temperature(np.array(loo), y_train, smoothing=laplace_smoothing(len(y_train)))
    assert clf.temperature_ == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("search", [None, "cv"])
def test_one_shot_temperature_scores_the_left_out_class_as_uninformative(search):
    """With one shot a class's image prototypes vanish when its shot is left out: the
    temperature's logits give it the shot's mean score over the other classes there, the
    blend search keeps 0 (it searches the same draws as the temperature)."""
    from sklearn_cmm._math.calibration import fit_temperature, laplace_smoothing

    X, y, text, W = modality_gap_problem(3, n_classes=6, n_per_class=12)
    first = np.array([np.flatnonzero(y == c)[0] for c in range(6)])
    X1, y1 = X[first], y[first]
    clf = SeMoBridgeClassifier(text_features=text, text_projection=W, text_encoder=None,
                               search=search, n_search_trials=30, random_state=0).fit(X1, y1)
    p = {name: getattr(clf, name + "_") for name in BLEND if name != "pinv_cutoff"}
    W_pinv = explicit_pinv(W, 0.3)
    f_hat = normalize(normalize(X1 @ W_pinv) @ W)
    z1, z2, z3 = normalize(X1) @ normalize(text).T, normalize(X1) @ f_hat.T, f_hat @ normalize(X1).T
    for z in (z2, z3):  # the own class: the mean of the row's other classes
        for i in range(6):
            z[i, i] = np.mean(np.delete(z[i], i))
    w = clf.class_weights_
    loo = p["lambda1"] * np.exp(-p["alpha"] * (1 - z1)) + w * (
        p["lambda2"] * np.exp(-p["beta"] * (1 - z2)) + p["lambda3"] * np.exp(-p["gamma"] * (1 - z3)))
    expected = fit_temperature(loo, y1, smoothing=laplace_smoothing(6))
    assert clf.temperature_ == pytest.approx(expected, rel=1e-4)
    assert 1e-3 < clf.temperature_ < 1e3  # the premise: not a bound of the search
    if search == "cv":  # the search's held-out accuracy is that of the zero-filled scores
        zero = [m.copy() for m in (z2, z3)]
        for m in zero:
            np.fill_diagonal(m, 0.0)
        logits = p["lambda1"] * np.exp(-p["alpha"] * (1 - z1)) + w * (
            p["lambda2"] * np.exp(-p["beta"] * (1 - zero[0]))
            + p["lambda3"] * np.exp(-p["gamma"] * (1 - zero[1])))
        assert clf.search_score_ == pytest.approx(np.mean(logits.argmax(1) == y1))


@pytest.mark.parametrize("calibration", ["temperature", None])
def test_fitted_model_keeps_no_calibration_scratch(data, calibration):
    clf = fitted(data, calibration=calibration)
    assert not [name for name in vars(clf) if name.startswith("_held")]
    assert (clf.temperature_ == 1.0) == (calibration is None)


@pytest.mark.parametrize("closed_form_wins", [True, False])
def test_trained_checkpoint_kept_only_if_it_beats_the_searched_closed_form(
    data, monkeypatch, closed_form_wins
):
    from sklearn_cmm import semobridge

    # After the validation training, the blend is searched on the trained checkpoint's
    # held-out scores (1st call) and on the closed form's (2nd call); force who wins.
    calls = []
    original = semobridge._search_accuracies

    def rigged(parts, candidates):
        accuracies = original(parts, candidates)
        calls.append(accuracies.max())
        if len(calls) == 2:
            accuracies = np.full(len(candidates), calls[0] + (0.0 if closed_form_wins else -0.01))
        return accuracies

    monkeypatch.setattr(semobridge, "_search_accuracies", rigged)
    params = dict(train=True, max_iter=60, validation_interval=25, warmup_iter=0,
                  n_iter_no_change=None, learning_rate=1e-2, search="cv",
                  n_search_trials=20, random_state=0)
    clf = fitted(data, **params)
    monkeypatch.setattr(semobridge, "_search_accuracies", original)
    if closed_form_wins:  # ties go to the closed form
        assert clf.best_iter_ == 0 and clf.loss_curve_ is None
        closed = fitted(data, search="cv", n_search_trials=20, random_state=0)
        np.testing.assert_allclose(clf.decision_function(data[2]), closed.decision_function(data[2]))
    else:
        assert clf.best_iter_ > 0 and clf.loss_curve_.shape == (clf.best_iter_,)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_diverged_training_raises_and_leaves_the_estimator_unfitted(data, early_stopping):
    # with early stopping, the validation's trainings diverge first: their NaN
    # checkpoints scored at chance, and the fit chose the closed form without a word
    X_train, y_train, _, _, text, W = data
    clf = SeMoBridgeClassifier(text_features=text, text_projection=W, text_encoder=None,
                               train=True, early_stopping=early_stopping, max_iter=30,
                               warmup_iter=0, learning_rate=1e6, validation_interval=5)
    with pytest.raises(ValueError, match="SeMoBridge-T diverged"):
        clf.fit(X_train, y_train)
    assert not hasattr(clf, "projection_pinv_") and not hasattr(clf, "classes_")


@pytest.mark.parametrize("text", [False, True])
def test_a_validation_training_gets_nothing_from_its_held_out_images(text, monkeypatch):
    # The prototypes, their preimage under W (text-free) and the "auto" image logit scale
    # of a validation training come from its own rows: changing a held-out image of the
    # first fold changes nothing that the training on the other fold receives.
    from sklearn_cmm import _semobridge_training as training
    from sklearn_cmm._math.semobridge import validation_folds

    rng = np.random.RandomState(0)
    n_classes, dim = 3, 6
    W = rng.randn(dim, dim)
    y = np.repeat(np.arange(n_classes), 4)
    X = rng.randn(len(y), dim) + 2 * np.eye(n_classes, dim)[y]
    held_out = np.flatnonzero(validation_folds(y, n_classes, np.random.RandomState(0)) == 0)[0]
    received = []
    init = training.BridgeTraining.__init__

    def spy(self, X_rows, y_rows, W, W_pinv, T, text_pre, params, backend, **kwargs):
        received.append((X_rows.copy(), T.copy(), np.array(text_pre), kwargs))
        init(self, X_rows, y_rows, W, W_pinv, T, text_pre, params, backend, **kwargs)

    monkeypatch.setattr(training.BridgeTraining, "__init__", spy)
    params = dict(text_projection=W, train=True, search=None, calibration=None, max_iter=2,
                  validation_interval=1, random_state=0, text_encoder=None)
    if text:
        params["text_features"] = np.eye(n_classes, dim) + 0.3 * rng.randn(n_classes, dim)
    firsts = []
    for factor in (1, -5):
        X_changed = X.copy()
        X_changed[held_out] *= factor
        received.clear()
        SeMoBridgeClassifier(**params).fit(X_changed, y)
        firsts.append(received[0])
    (X_a, T_a, pre_a, kw_a), (X_b, T_b, pre_b, kw_b) = firsts
    assert np.array_equal(X_a, X_b) and len(X_a) < len(X)  # the first fold's training
    np.testing.assert_array_equal(T_a, T_b)
    np.testing.assert_array_equal(pre_a, pre_b)
    assert kw_a == kw_b
