import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_cmm import CrossModalMappingClassifier, ZeroShotClassifier, _torch, modality_gap
from sklearn_cmm._math import cmm_loss
from sklearn_cmm._math.cmm import cmm_logits, ridge_map_to_prototypes
from sklearn_cmm._math.calibration import fit_temperature
from sklearn_cmm._math.search import spread_subset
from sklearn_cmm.cmm import AUTO_IMAGE_WEIGHTS, AUTO_MAX_ITER, AUTO_MIN_ITER, refinement_budget
from sklearn_cmm.model_selection import FewShotSplit

from ._backends import train_on_torch


def _unit(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def gap_problem(seed=0, n_classes=8, dim=32, n_train=8, n_test=30, gap=1.5, distortion=1.0):
    """Images and class texts in two shifted cones, the image side also distorted.

    Class directions ``mu_c`` are random unit vectors; text ``t_c = mu_c + g_text`` and
    images ``x = mu_c A + g_image + noise`` with different fixed offsets of norm ``gap``
    (the modality gap) and a random linear distortion ``A`` near the identity, so that
    zero-shot classification is mediocre. Returns train and test sets and the texts.
    """
    rng = np.random.RandomState(seed)
    mu = _unit(rng.randn(n_classes, dim))

    def offset():
        g = rng.randn(dim)
        return gap * g / np.linalg.norm(g)

    g_text, g_image = offset(), offset()
    distort = np.eye(dim) + distortion * rng.randn(dim, dim) / np.sqrt(dim)

    def images(per_class):
        y = np.repeat(np.arange(n_classes), per_class)
        return mu[y] @ distort + g_image + 0.25 * rng.randn(len(y), dim), y

    X_train, y_train = images(n_train)
    X_test, y_test = images(n_test)
    return X_train, y_train, X_test, y_test, mu + g_text


@pytest.mark.parametrize("seed", [0, 1])
def test_beats_zero_shot_and_shrinks_the_gap(seed):
    X, y, X_test, y_test, T = gap_problem(seed)
    zero_shot = ZeroShotClassifier(text_features=T).fit(X, y).score(X_test, y_test)
    clf = CrossModalMappingClassifier(text_features=T, random_state=0).fit(X, y)
    assert clf.score(X_test, y_test) > zero_shot
    assert modality_gap(clf.transform(X_test), T) < modality_gap(X_test, T)
    assert clf.prototype_source_ == "text"
    assert 0 < clf.n_iter_ <= refinement_budget(*X.shape, 8, clf.train_text)
    assert len(clf.loss_curve_) >= clf.n_iter_
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]


def test_max_iter_zero_is_the_closed_form():
    X, y, _, _, T = gap_problem(n_classes=4, dim=12, n_train=3)
    clf = CrossModalMappingClassifier(
        text_features=T, max_iter=0, ridge=0.3, image_weight=0.0
    ).fit(X, y)
    Tn = _unit(T)
    expected = ridge_map_to_prototypes(_unit(X), y, Tn, 0.3)
    # float64 end to end (a float32 round trip would be off by ~1e-8)
    np.testing.assert_allclose(clf.mapping_, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(clf.prototypes_, Tn)
    np.testing.assert_allclose(clf.zero_shot_prototypes_, Tn)
    logits = 100.0 * _unit(_unit(X) @ expected) @ Tn.T + 1.0 * 100.0 * _unit(X) @ Tn.T
    np.testing.assert_allclose(clf.decision_function(X), logits, rtol=1e-12)
    assert clf.loss_curve_.shape == (0,)


@pytest.mark.parametrize("zero_shot_weight", [0.0, 1.0, 2.5])
def test_identity_without_training_is_zero_shot(zero_shot_weight):
    # W = I and T = T0: logits = (1 + zero_shot_weight) * logit_scale * cos(x, T0).
    X, y, X_test, _, T = gap_problem(n_classes=4, dim=12, n_train=3)
    clf = CrossModalMappingClassifier(
        text_features=T, init="identity", max_iter=0, logit_scale=50.0,
        zero_shot_weight=zero_shot_weight, image_weight=0.0,
    ).fit(X, y)
    zero_shot = ZeroShotClassifier(
        text_features=T, logit_scale=(1 + zero_shot_weight) * 50.0
    ).fit(X, y)
    np.testing.assert_allclose(
        clf.decision_function(X_test), zero_shot.decision_function(X_test), rtol=1e-12
    )
    np.testing.assert_array_equal(clf.predict(X_test), zero_shot.predict(X_test))
    np.testing.assert_allclose(clf.transform(X_test), _unit(X_test))


def _class_means(X, y, n_classes):
    """Unit means of each class's unit rows, by a loop."""
    return _unit(np.array([_unit(X)[y == c].mean(axis=0) for c in range(n_classes)]))


def test_decision_function_is_the_fused_logits():
    X, y, X_test, _, T = gap_problem(n_classes=4, dim=12, n_train=3)
    clf = CrossModalMappingClassifier(
        text_features=T, max_iter=5, logit_scale=30.0, zero_shot_weight=0.4, train_text=True,
        image_weight=0.7,
    ).fit(X, y)
    means = _class_means(X, y, 4)
    np.testing.assert_allclose(clf.image_prototypes_, means)
    expected = cmm_logits(X_test, clf.mapping_, clf.prototypes_, _unit(T), 30.0, 0.4)
    expected += 0.7 * 30.0 * _unit(X_test) @ means.T
    np.testing.assert_allclose(clf.decision_function(X_test), expected, rtol=1e-12)
    scaled = expected / clf.temperature_
    proba = np.exp(scaled - scaled.max(1, keepdims=True))
    np.testing.assert_allclose(clf.predict_proba(X_test), proba / proba.sum(1, keepdims=True))
    np.testing.assert_array_equal(clf.predict(X_test), np.argmax(expected, axis=1))


def _held_out_terms_reference(X, y, T, **params):
    """Each shot's two logit terms by a closed-form CMM fitted on the other folds.

    The folds: each class's shots dealt round-robin into 3 folds, continuing across
    classes, as the calibration's cross-fit deals them.
    """
    folds = np.empty(len(y), dtype=int)
    start = 0
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        folds[members] = (start + np.arange(len(members))) % 3
        start += len(members)
    mapped, image = np.empty((len(y), len(T))), np.empty((len(y), len(T)))
    for k in range(3):
        train, test = folds != k, folds == k
        fold = CrossModalMappingClassifier(
            text_features=T, classes=np.unique(y), max_iter=0, image_weight=0.0,
            calibration=None, **params,
        ).fit(X[train], y[train])
        mapped[test] = fold.decision_function(X[test])
        image[test] = _unit(X[test]) @ _class_means(X[train], y[train], len(T)).T
    return mapped, image


def _calibrated_log_loss_reference(logits, y):
    """Smoothed log-loss at the best temperature, by a fine grid over log(temperature)."""
    smoothing = 1 / (len(y) + 2)
    best = np.inf
    for log_t in np.linspace(np.log(1e-3), np.log(1e3), 4001):
        z = logits / np.exp(log_t)
        log_p = z - z.max(1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
        loss = -np.mean((1 - smoothing) * log_p[np.arange(len(y)), y]
                        + smoothing * log_p.mean(1))
        best = min(best, loss)
    return best


def test_auto_image_weight_minimises_the_held_out_log_loss():
    X, y, _, _, T = gap_problem(n_classes=4, dim=12, n_train=6)
    params = dict(ridge=0.3, logit_scale=30.0)
    clf = CrossModalMappingClassifier(text_features=T, max_iter=0, **params).fit(X, y)
    mapped, image = _held_out_terms_reference(X, y, T, **params)
    losses = [_calibrated_log_loss_reference(mapped + 30.0 * w * image, y)
              for w in AUTO_IMAGE_WEIGHTS]
    assert clf.image_weight_ == AUTO_IMAGE_WEIGHTS[int(np.argmin(losses))]
    # The grid's losses differ by more than the reference's grid error on this problem.
    assert np.sort(losses)[1] - np.min(losses) > 1e-4
    # The temperature is fitted on the same held-out logits, at the chosen weight.
    best = mapped + 30.0 * clf.image_weight_ * image
    assert clf.temperature_ == pytest.approx(fit_temperature(best, y, 1 / (len(y) + 2)))


def test_image_weight_and_temperature_score_a_spread_subset_of_many_shots(monkeypatch):
    X, y, _, _, T = gap_problem(n_classes=4, dim=12, n_train=6)
    monkeypatch.setattr("sklearn_cmm.cmm.MAX_HELD_OUT", 10)
    params = dict(ridge=0.3, logit_scale=30.0)
    clf = CrossModalMappingClassifier(text_features=T, max_iter=0, **params).fit(X, y)
    scored = spread_subset(y, 10)
    mapped, image = (t[scored] for t in _held_out_terms_reference(X, y, T, **params))
    losses = [_calibrated_log_loss_reference(mapped + 30.0 * w * image, y[scored])
              for w in AUTO_IMAGE_WEIGHTS]
    assert clf.image_weight_ == AUTO_IMAGE_WEIGHTS[int(np.argmin(losses))]
    best = mapped + 30.0 * clf.image_weight_ * image
    assert clf.temperature_ == pytest.approx(fit_temperature(best, y[scored], 1 / 12))


# 4 classes x 6 shots: the full fit has 24 rows, each refit of the cross-fit 16, so 16-d
# refits at the switch to the dim x dim system and 17-d refits below it
@pytest.mark.parametrize("dim", [16, 17])
def test_refits_take_the_gram_of_their_rows_by_subtraction(monkeypatch, dim):
    calls = []

    def spy(V, y_encoded, prototypes, ridge, gram=None):
        calls.append((V, gram))
        return ridge_map_to_prototypes(V, y_encoded, prototypes, ridge, gram)

    monkeypatch.setattr("sklearn_cmm.cmm.ridge_map_to_prototypes", spy)
    X, y, _, _, T = gap_problem(n_classes=4, dim=dim, n_train=6)
    CrossModalMappingClassifier(text_features=T, max_iter=0).fit(X, y)
    assert [len(V) for V, _ in calls] == [24, 16, 16, 16]
    for V, gram in calls:
        if len(V) < dim:
            assert gram is None
        else:  # the full fit's, and a refit's as the full one less its held-out rows'
            np.testing.assert_allclose(gram, V.T @ V, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("text", [True, False])
def test_auto_image_weight_is_zero_with_one_shot_a_class(text):
    # A held-out single shot's class has no other shot: the image term cannot help it.
    X, y, _, _, T = gap_problem(n_classes=5, dim=12, n_train=1)
    text_kwargs = dict(text_features=T) if text else dict(text_encoder=None)
    clf = CrossModalMappingClassifier(max_iter=0, **text_kwargs).fit(X, y)
    assert clf.image_weight_ == 0.0


@pytest.mark.parametrize("calibration", [None, "temperature"])
def test_a_given_image_weight_is_used_as_given(calibration):
    X, y, _, _, T = gap_problem(n_classes=4, dim=12, n_train=3)
    clf = CrossModalMappingClassifier(
        text_features=T, max_iter=0, image_weight=3, calibration=calibration
    ).fit(X, y)
    assert clf.image_weight_ == 3.0
    assert not hasattr(clf, "_held_out_logits")  # taken by the calibration, or never made


def test_train_text_refines_the_prototypes():
    X, y, _, _, T = gap_problem(n_classes=4, dim=12, n_train=3)
    frozen = CrossModalMappingClassifier(text_features=T, max_iter=10, train_text=False).fit(X, y)
    trained = CrossModalMappingClassifier(text_features=T, max_iter=10, train_text=True).fit(X, y)
    np.testing.assert_allclose(frozen.prototypes_, _unit(T))
    np.testing.assert_allclose(trained.zero_shot_prototypes_, _unit(T))
    assert not np.allclose(trained.prototypes_, _unit(T))
    np.testing.assert_allclose(np.linalg.norm(trained.prototypes_, axis=1), 1.0)


def test_weight_decay_pulls_toward_the_start_not_zero():
    X, y, _, _, T = gap_problem(n_classes=4, dim=12, n_train=3)
    start = CrossModalMappingClassifier(text_features=T, max_iter=0).fit(X, y).mapping_
    # With a learning rate of ~0 only decay could move W; it acts on W - start, so W stays.
    clf = CrossModalMappingClassifier(
        text_features=T, solver="adamw", max_iter=20, learning_rate=1e-12, weight_decay=1e6,
        alpha=0.0,
    ).fit(X, y)
    np.testing.assert_allclose(clf.mapping_, start, atol=1e-6)


def test_text_free_maps_onto_image_means():
    X, y, X_test, y_test, _ = gap_problem()
    clf = CrossModalMappingClassifier(text_encoder=None).fit(X, y)
    assert clf.prototype_source_ == "image_means"
    means = _unit(np.array([_unit(X)[y == k].mean(0) for k in range(8)]))
    np.testing.assert_allclose(clf.zero_shot_prototypes_, means)
    assert clf.score(X_test, y_test) > 0.8


def test_transform_is_unit_and_shaped():
    X, y, X_test, _, T = gap_problem(n_classes=3, dim=10, n_train=4)
    clf = CrossModalMappingClassifier(text_features=T, max_iter=5).fit(X, y)
    mapped = clf.transform(X_test)
    assert mapped.shape == X_test.shape and mapped.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(mapped, axis=1), 1.0)
    np.testing.assert_allclose(mapped, _unit(_unit(X_test) @ clf.mapping_))


def test_same_seed_same_model():
    X, y, X_test, _, T = gap_problem(n_classes=4, dim=12, n_train=6)
    params = dict(text_features=T, n_shots=3, max_iter=15, train_text=True, random_state=3)
    a = CrossModalMappingClassifier(**params).fit(X, y)
    b = CrossModalMappingClassifier(**params).fit(X, y)
    np.testing.assert_array_equal(a.mapping_, b.mapping_)
    np.testing.assert_array_equal(a.prototypes_, b.prototypes_)
    np.testing.assert_array_equal(a.decision_function(X_test), b.decision_function(X_test))


def test_float32_and_float64_input():
    X, y, X_test, _, T = gap_problem(n_classes=4, dim=12, n_train=4)
    a = CrossModalMappingClassifier(text_features=T, max_iter=5).fit(X, y)
    b = CrossModalMappingClassifier(text_features=T.astype(np.float32), max_iter=5).fit(
        X.astype(np.float32), y
    )
    assert b.mapping_.dtype == np.float64 and b.decision_function(X_test).dtype == np.float64
    np.testing.assert_allclose(
        a.decision_function(X_test), b.decision_function(X_test.astype(np.float32)), atol=1e-3
    )


def test_dataframe_input():
    X, y, X_test, _, T = gap_problem(n_classes=3, dim=6, n_train=4)
    columns = [f"f{i}" for i in range(6)]
    clf = CrossModalMappingClassifier(text_features=T, max_iter=5)
    clf.fit(pd.DataFrame(X, columns=columns), pd.Series(y))
    np.testing.assert_array_equal(clf.feature_names_in_, columns)
    ref = clone(clf).fit(X, y)
    np.testing.assert_allclose(
        clf.decision_function(pd.DataFrame(X_test, columns=columns)),
        ref.decision_function(X_test),
    )


def test_pickle_round_trip_holds_numpy_only():
    X, y, X_test, _, T = gap_problem(n_classes=3, dim=8, n_train=4)
    clf = CrossModalMappingClassifier(text_features=T, max_iter=5, train_text=True).fit(X, y)
    for name in ("mapping_", "prototypes_", "zero_shot_prototypes_", "loss_curve_"):
        assert type(getattr(clf, name)) is np.ndarray
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.decision_function(X_test), clf.decision_function(X_test))
    np.testing.assert_array_equal(restored.transform(X_test), clf.transform(X_test))


def test_string_labels_and_two_classes():
    X, y, X_test, _, T = gap_problem(n_classes=2, dim=8, n_train=5)
    labels = np.array(["cat", "dog"])
    clf = CrossModalMappingClassifier(text_features=T, max_iter=5).fit(X, labels[y])
    integer = CrossModalMappingClassifier(text_features=T, max_iter=5).fit(X, y)
    scores = clf.decision_function(X_test)
    assert scores.shape == (len(X_test),)
    # Binary convention: a positive score is the second class.
    np.testing.assert_array_equal(clf.predict(X_test), labels[(scores > 0).astype(int)])
    np.testing.assert_array_equal(clf.predict(X_test), labels[integer.predict(X_test)])


def test_grid_search_over_shots_and_triplet_weight():
    X, y, _, _, T = gap_problem(n_classes=4, dim=12, n_train=10)
    search = GridSearchCV(
        CrossModalMappingClassifier(text_features=T, max_iter=10, random_state=0),
        {"n_shots": [1, 2, 4], "triplet_weight": [0.1, 1.0]},
        cv=FewShotSplit(n_shots=5, n_splits=2, random_state=0),
    ).fit(X, y)
    assert search.best_params_["n_shots"] in (1, 2, 4)
    assert search.best_params_["triplet_weight"] in (0.1, 1.0)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_.n_features_in_ == 12


def test_verbose_shows_a_progress_bar(capsys):
    X, y, _, _, T = gap_problem(n_classes=3, dim=6, n_train=3)
    CrossModalMappingClassifier(text_features=T, max_iter=3, verbose=True).fit(X, y)
    assert "CrossModalMappingClassifier" in capsys.readouterr().err
    CrossModalMappingClassifier(text_features=T, max_iter=3).fit(X, y)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "params",
    [
        {"init": "random"},
        {"ridge": 0.0},
        {"max_iter": -1},
        {"max_iter": 2.5},
        {"max_iter": "many"},
        {"solver": "sgd"},
        {"tol": -1.0},
        {"alpha": -1.0},
        {"learning_rate": 0.0},
        {"weight_decay": -1.0},
        {"triplet_weight": -0.1},
        {"margin": -0.1},
        {"logit_scale": 0.0},
        {"zero_shot_weight": -1.0},
        {"train_text": "yes"},
        {"device": 0},
        {"n_shots": 0},
    ],
)
def test_invalid_parameters(params):
    X, y, _, _, T = gap_problem(n_classes=3, dim=6, n_train=3)
    with pytest.raises(InvalidParameterError):
        CrossModalMappingClassifier(text_features=T, **params).fit(X, y)


def test_bad_device_and_missing_cuda():
    X, y, _, _, T = gap_problem(n_classes=3, dim=6, n_train=3)
    with pytest.raises(ValueError, match="device"):
        CrossModalMappingClassifier(text_features=T, device="gpu").fit(X, y)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            CrossModalMappingClassifier(text_features=T, device="cuda").fit(X, y)
    clf = CrossModalMappingClassifier(text_features=T, device="cpu", max_iter=2).fit(X, y)
    assert clf.mapping_.shape == (6, 6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_matches_cpu_and_predicts_in_numpy():
    X, y, X_test, _, T = gap_problem(n_classes=4, dim=12, n_train=4)
    gpu = CrossModalMappingClassifier(text_features=T, device="cuda", max_iter=10).fit(X, y)
    cpu = CrossModalMappingClassifier(text_features=T, device="cpu", max_iter=10).fit(X, y)
    assert type(gpu.mapping_) is np.ndarray
    np.testing.assert_allclose(gpu.mapping_, cpu.mapping_, atol=1e-4)
    restored = pickle.loads(pickle.dumps(gpu))
    np.testing.assert_array_equal(restored.predict(X_test), gpu.predict(X_test))


# L-BFGS's line search amplifies float32 rounding over many iterations (as a change of
# thread count does), so its run is short and single: the default fit adds three
# cross-fit refits on 8 shots each, whose searches branch on the rounding.
@pytest.mark.parametrize("solver, max_iter, single_refit, dim, n_train", [
    ("lbfgs", 8, dict(image_weight=0.0, calibration=None), 12, 4),
    ("lbfgs", 5, dict(image_weight=0.0, calibration=None), 30, 3),  # in the span of shots
    ("adamw", 40, {}, 12, 4)])
def test_numpy_training_equals_torchs(monkeypatch, solver, max_iter, single_refit, dim,
                                      n_train):
    """The CPU trains on numpy arrays, a GPU on torch tensors: the same fit either way
    (here torch on the CPU)."""
    X, y, X_test, _, T = gap_problem(n_classes=4, dim=dim, n_train=n_train)
    params = dict(text_features=T, solver=solver, max_iter=max_iter, tol=0.0,
                  learning_rate=1e-2, train_text=True, **single_refit)
    on_numpy = CrossModalMappingClassifier(**params).fit(X, y)
    train_on_torch(monkeypatch)
    on_torch = CrossModalMappingClassifier(**params).fit(X, y)
    assert on_numpy.n_iter_ == on_torch.n_iter_ > 1
    assert not np.allclose(on_numpy.mapping_, CrossModalMappingClassifier(
        **{**params, "max_iter": 0}).fit(X, y).mapping_, atol=1e-3)  # the premise: it moved
    for name in ("mapping_", "prototypes_", "loss_curve_"):
        np.testing.assert_allclose(getattr(on_torch, name), getattr(on_numpy, name),
                                   rtol=1e-5, atol=1e-5)
    # the logits are 100 x the cosines (logit_scale): a probability moves by up to 25 x a
    # cosine's difference, which the map's 1e-5 above allows to be 1e-5
    np.testing.assert_allclose(on_torch.predict_proba(X_test), on_numpy.predict_proba(X_test),
                               atol=1e-4)


def test_lbfgs_refinement_of_few_shots_trains_in_their_span(monkeypatch):
    """12 shots in 30-d (the most per dimension, ``SPAN_MAX_SHARE``): L-BFGS trains
    n x dim coordinates of the map's residual, not dim x dim, and ends at the fit of the
    full residual (a short run: float32 rounding grows over L-BFGS's iterations)."""
    X, y, X_test, _, T = gap_problem(n_classes=4, dim=30, n_train=3)
    params = dict(text_features=T, max_iter=5, tol=0.0, train_text=True, image_weight=0.0,
                  calibration=None)
    shapes, minimize_lbfgs = [], _torch.minimize_lbfgs

    def spy(param, *args, **kwargs):
        shapes.append(tuple(param.shape))
        return minimize_lbfgs(param, *args, **kwargs)

    monkeypatch.setattr(_torch, "minimize_lbfgs", spy)
    in_span = CrossModalMappingClassifier(**params).fit(X, y)
    monkeypatch.setattr(cmm_loss, "SPAN_MAX_SHARE", 0.0)
    full = CrossModalMappingClassifier(**params).fit(X, y)
    assert shapes == [(12 + 4, 30), (30 + 4, 30)]
    assert in_span.n_iter_ == full.n_iter_ > 1
    assert not np.allclose(full.mapping_, CrossModalMappingClassifier(
        **{**params, "max_iter": 0}).fit(X, y).mapping_, atol=1e-3)  # the premise: it moved
    for name in ("mapping_", "prototypes_", "loss_curve_"):
        np.testing.assert_allclose(getattr(in_span, name), getattr(full, name), rtol=1e-5,
                                   atol=1e-6)
    np.testing.assert_allclose(in_span.predict_proba(X_test), full.predict_proba(X_test),
                               atol=1e-6)


def test_adamw_refinement_of_few_shots_trains_the_full_residual(monkeypatch):
    """AdamW's elementwise steps leave the span of the shots: its residual is dim x dim."""
    X, y, _, _, T = gap_problem(n_classes=4, dim=30, n_train=3)
    shapes, minimize_full_batch = [], _torch.minimize_full_batch

    def spy(param, *args, **kwargs):
        shapes.append(tuple(param.shape))
        return minimize_full_batch(param, *args, **kwargs)

    monkeypatch.setattr(_torch, "minimize_full_batch", spy)
    CrossModalMappingClassifier(text_features=T, solver="adamw", max_iter=2, train_text=True,
                                image_weight=0.0, calibration=None).fit(X, y)
    assert shapes == [(30 + 4, 30)]


def test_text_dimension_mismatch():
    X, y, _, _, T = gap_problem(n_classes=3, dim=6, n_train=3)
    with pytest.raises(ValueError):
        CrossModalMappingClassifier(text_features=T[:, :5]).fit(X, y)
    clf = CrossModalMappingClassifier(text_features=T, max_iter=0).fit(X, y)
    with pytest.raises(ValueError):
        clf.transform(X[:, :5])


def _first_loss_reference(X, y, T, *, ridge, logit_scale, zero_shot_weight, triplet_weight,
                          margin):
    """The refinement loss at step 0 from the estimator's inputs alone (numpy loops)."""
    V, T0 = _unit(X), _unit(T)
    W0 = ridge_map_to_prototypes(V, y, T0, ridge)
    mapped = _unit(V @ W0)
    total = 0.0
    for i in range(len(V)):
        cos = mapped[i] @ T0.T
        logits = logit_scale * cos + zero_shot_weight * logit_scale * (V[i] @ T0.T)
        top = logits.max()
        total += np.log(np.exp(logits - top).sum()) + top - logits[y[i]]
        hardest = max(cos[c] for c in range(len(T0)) if c != y[i])
        total += triplet_weight * max(0.0, margin - cos[y[i]] + hardest)
    return total / len(V)


@pytest.mark.parametrize("solver", ["lbfgs", "adamw"])
@pytest.mark.parametrize("zero_shot_weight", [0.0, 0.7])
def test_first_loss_is_the_formula_of_the_inputs(solver, zero_shot_weight):
    # Any wiring slip (the zero-shot term dropped, the wrong prototypes or start, a scale
    # applied twice) changes the loss at the start, where the penalty is still 0.
    X, y, _, _, T = gap_problem(n_classes=4, dim=12, n_train=3)
    params = dict(ridge=0.3, logit_scale=20.0, zero_shot_weight=zero_shot_weight,
                  triplet_weight=0.5, margin=0.1)
    clf = CrossModalMappingClassifier(
        text_features=T, solver=solver, max_iter=3, alpha=0.5, train_text=True, **params
    ).fit(X, y)
    expected = _first_loss_reference(X, y, T, **params)
    assert clf.loss_curve_[0] == pytest.approx(expected, rel=1e-5)


def test_lbfgs_converges_to_a_stationary_point_of_the_penalised_loss():
    # The gradient of the full objective (loss + alpha penalty), rebuilt from the inputs,
    # vanishes at the fitted W: the refinement minimises the documented objective.
    X, y, _, _, T = gap_problem(n_classes=4, dim=12, n_train=3)
    alpha, s, zsw = 0.05, 10.0, 0.5
    clf = CrossModalMappingClassifier(
        text_features=T, max_iter=100, tol=0.0, alpha=alpha, logit_scale=s,
        zero_shot_weight=zsw, triplet_weight=0.0, train_text=False,
    ).fit(X, y)
    W0 = ridge_map_to_prototypes(_unit(X), y, _unit(T), clf.ridge)
    V, T0 = torch.tensor(_unit(X)), torch.tensor(_unit(T))

    def gradient(residual):
        delta = torch.tensor(residual, requires_grad=True)
        cos = torch.nn.functional.normalize(V @ (torch.tensor(W0) + delta), dim=1) @ T0.T
        logits = s * cos + zsw * s * V @ T0.T
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(y))
        (loss + alpha / 2 * delta.square().sum()).backward()
        return delta.grad.abs().max().item()

    assert gradient(clf.mapping_ - W0) < 1e-3 * gradient(np.zeros_like(W0))
    assert clf.n_iter_ > 1


def test_alpha_keeps_the_map_near_the_closed_form():
    X, y, _, _, T = gap_problem(n_classes=4, dim=12, n_train=3)
    W0 = CrossModalMappingClassifier(text_features=T, max_iter=0).fit(X, y).mapping_
    moved = [
        np.linalg.norm(
            CrossModalMappingClassifier(text_features=T, alpha=alpha).fit(X, y).mapping_ - W0
        )
        for alpha in (1e-3, 1e-1, 10.0)
    ]
    assert moved[0] > moved[1] > moved[2] > 0


def test_refinement_budget_follows_the_problem_size():
    assert refinement_budget(30, 8, 3, False) == AUTO_MAX_ITER
    assert refinement_budget(10**6, 1024, 10**4, True) == AUTO_MIN_ITER
    n, d, c = 16_000, 512, 1000
    assert refinement_budget(n, d, c, False) == max(
        AUTO_MIN_ITER, min(AUTO_MAX_ITER, int(1e12 // (4 * n * d * (d + 2 * c))))
    )
    assert refinement_budget(n, d, c, True) <= refinement_budget(n, d, c, False)




def test_divergence_is_loud_and_leaves_the_estimator_unfitted():
    X, y, _, _, T = gap_problem()
    clf = CrossModalMappingClassifier(
        text_features=T, solver="adamw", learning_rate=1e6, max_iter=30, alpha=0.0
    )
    with pytest.raises(ValueError, match="diverged"):
        clf.fit(X, y)
    assert not hasattr(clf, "mapping_") and not hasattr(clf, "classes_")


def test_feature_names_and_pandas_output():
    X, y, _, _, T = gap_problem()
    clf = CrossModalMappingClassifier(text_features=T, max_iter=0).fit(X, y)
    names = clf.get_feature_names_out()
    assert list(names[:2]) == ["crossmodalmappingclassifier0", "crossmodalmappingclassifier1"]
    assert len(names) == X.shape[1]
    frame = clf.set_output(transform="pandas").transform(X)
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(names)
    np.testing.assert_allclose(frame.to_numpy(), clf.set_output(transform="default").transform(X))


@pytest.mark.parametrize("dtype, scale", [(np.float64, 1e200), (np.float32, 1e30)])
def test_huge_feature_values_give_the_same_model(dtype, scale):
    X, y, X_test, _, T = gap_problem()
    clf = CrossModalMappingClassifier(text_features=T, max_iter=0)
    plain = clf.fit(X.astype(dtype), y).predict_proba(X_test.astype(dtype))
    huge = clf.fit((X * scale).astype(dtype), y).predict_proba((X_test * scale).astype(dtype))
    assert np.all(np.isfinite(huge))
    np.testing.assert_allclose(huge, plain, atol=1e-5)
