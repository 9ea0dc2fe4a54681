"""Temperature scaling: the 1-D fit, the ECE, and their wiring into every classifier."""

import math

import numpy as np
import pytest

from sklearn_cmm import TipAdapterClassifier, ZeroShotClassifier
from sklearn_cmm._math.basic import l2_normalize, one_hot
from sklearn_cmm._math.calibration import (
    LOG_TEMPERATURE_BOUNDS,
    calibrated_log_loss,
    expected_calibration_error,
    fit_temperature,
    laplace_smoothing,
    temperature_log_loss,
)
from sklearn_cmm._math.tip_adapter import tip_adapter_logits

from .test_baselines import _every_class_left_out_reference


def _logits(seed=0, n=40, n_classes=5, scale=3.0):
    rng = np.random.RandomState(seed)
    y = rng.randint(n_classes, size=n)
    logits = scale * (rng.randn(n, n_classes) + 1.5 * one_hot(y, n_classes))
    return logits, y


def _slow_loss(logits, y, temperature, smoothing):
    total = 0.0
    for row, label in zip(logits, y):
        scaled = [v / temperature for v in row]
        log_norm = math.log(sum(math.exp(v - max(scaled)) for v in scaled)) + max(scaled)
        log_p = [v - log_norm for v in scaled]
        target = [smoothing / len(row) + (1 - smoothing) * (c == label) for c in range(len(row))]
        total -= sum(t * lp for t, lp in zip(target, log_p))
    return total / len(y)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_temperature_log_loss_matches_a_loop(smoothing):
    logits, y = _logits(n=12)
    assert temperature_log_loss(logits, y, 0.7, smoothing) == pytest.approx(
        _slow_loss(logits, y, 0.7, smoothing), rel=1e-12
    )


@pytest.mark.parametrize("seed, scale, smoothing", [(0, 3.0, 0.0), (1, 30.0, 0.0), (2, 0.05, 0.02)])
def test_fit_temperature_matches_a_brute_force_grid(seed, scale, smoothing):
    logits, y = _logits(seed, n=20, scale=scale)
    grid = np.exp(np.linspace(*LOG_TEMPERATURE_BOUNDS, 1001))
    losses = [_slow_loss(logits, y, t, smoothing) for t in grid]
    best = grid[int(np.argmin(losses))]
    fitted = fit_temperature(logits, y, smoothing)
    step = grid[1] / grid[0]
    assert best / step <= fitted <= best * step
    assert temperature_log_loss(logits, y, fitted, smoothing) <= min(losses) + 1e-9


@pytest.mark.parametrize("seed, scale", [(0, 3.0), (1, 30.0)])
def test_calibrated_log_loss_is_the_smoothed_loss_at_the_best_temperature(seed, scale):
    logits, y = _logits(seed, n=20, scale=scale)
    smoothing = 1 / (len(y) + 2)
    grid = np.exp(np.linspace(*LOG_TEMPERATURE_BOUNDS, 1001))
    best = min(_slow_loss(logits, y, t, smoothing) for t in grid)
    assert calibrated_log_loss(logits, y) == pytest.approx(best, abs=1e-4)  # grid error
    assert calibrated_log_loss(logits, y) <= best + 1e-9
    # Scale-free: the temperature absorbs a common factor.
    assert calibrated_log_loss(7 * logits, y) == pytest.approx(calibrated_log_loss(logits, y))


def test_fit_temperature_is_scale_equivariant():
    logits, y = _logits(3)
    assert fit_temperature(10 * logits, y) == pytest.approx(10 * fit_temperature(logits, y))


def test_all_correct_shots_need_the_smoothing_for_a_finite_temperature():
    logits = 5 * np.eye(4)
    y = np.arange(4)
    # Unsmoothed, the loss falls to 0 with the temperature: probabilities of 0 and 1.
    assert temperature_log_loss(logits, y, fit_temperature(logits, y)) < 1e-12
    fitted = fit_temperature(logits, y, laplace_smoothing(len(y)))
    assert math.exp(LOG_TEMPERATURE_BOUNDS[0]) * 10 < fitted < 5
    # Laplace's rule: the true class gets about (n + 1) / (n + 2) of the probability.
    proba = np.exp(logits / fitted)
    proba /= proba.sum(1, keepdims=True)
    assert proba[0, 0] == pytest.approx(1 - laplace_smoothing(4) * 3 / 4, rel=1e-4)


def test_constant_logits_give_temperature_one():
    assert fit_temperature(np.full((3, 4), 2.5), np.array([0, 1, 2])) == 1.0


def _slow_ece(y, proba, n_bins):
    bins = [[] for _ in range(n_bins)]
    for label, row in zip(y, proba):
        conf = max(row)
        b = max(0, min(n_bins - 1, math.ceil(conf * n_bins) - 1))
        bins[b].append((float(np.argmax(row) == label), conf))
    return sum(
        abs(sum(c for c, _ in b) - sum(p for _, p in b)) for b in bins if b
    ) / len(y)


def test_ece_matches_a_loop():
    logits, y = _logits(4, n=200)
    proba = np.exp(logits / 4)
    proba /= proba.sum(1, keepdims=True)
    for n_bins in (1, 10, 15):
        assert expected_calibration_error(y, proba, n_bins) == pytest.approx(
            _slow_ece(y, proba, n_bins)
        )
    # One bin: the mean confidence minus the accuracy.
    gap = proba.max(1).mean() - np.mean(proba.argmax(1) == y)
    assert expected_calibration_error(y, proba, 1) == pytest.approx(abs(gap))


# --------------------------------------------------------------------------- the wiring


def _problem(seed=0, n_classes=4, per_class=6, dim=16, noise=0.9):
    rng = np.random.RandomState(seed)
    directions = rng.randn(n_classes, dim)
    y = np.repeat(np.arange(n_classes), per_class)
    X = directions[y] + noise * rng.randn(len(y), dim)
    X_test = directions[np.arange(50) % n_classes] + noise * rng.randn(50, dim)
    return X, y, X_test, directions


def _softmax(logits):
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _uncalibrated(clf):
    # Until every constructor exposes ``calibration``, the instance attribute overrides
    # the class default; set_params works once it is a parameter.
    if "calibration" in clf.get_params():
        return clf.set_params(calibration=None)
    clf.calibration = None
    return clf


@pytest.mark.parametrize(
    "make", [
        lambda T: ZeroShotClassifier(text_features=T),
        lambda T: TipAdapterClassifier(text_features=T, search="cv", random_state=0),
    ],
)
def test_proba_is_softmax_of_logits_over_temperature_and_predict_unchanged(make):
    X, y, X_test, T = _problem()
    clf = make(T).fit(X, y)
    plain = _uncalibrated(make(T)).fit(X, y)
    logits = clf.decision_function(X_test)
    assert clf.temperature_ > 0 and clf.temperature_ != 1.0
    assert plain.temperature_ == 1.0
    np.testing.assert_allclose(logits, plain.decision_function(X_test))
    np.testing.assert_array_equal(clf.predict(X_test), plain.predict(X_test))
    np.testing.assert_allclose(clf.predict_proba(X_test), _softmax(logits / clf.temperature_))
    np.testing.assert_allclose(plain.predict_proba(X_test), _softmax(logits))
    np.testing.assert_allclose(
        clf.predict_log_proba(X_test), np.log(clf.predict_proba(X_test)), atol=1e-10
    )
    np.testing.assert_array_equal(
        clf.classes_[clf.predict_proba(X_test).argmax(1)], clf.predict(X_test)
    )


def test_zero_shot_temperature_is_fitted_on_its_training_logits():
    X, y, _, T = _problem()
    clf = ZeroShotClassifier(text_features=T).fit(X, y)
    logits = clf.decision_function(X)
    expected = fit_temperature(logits, y, laplace_smoothing(len(y)))
    assert clf.temperature_ == pytest.approx(expected)


def test_temperature_depends_on_the_training_shots_only():
    X, y, X_test, T = _problem()
    clf = TipAdapterClassifier(text_features=T).fit(X, y)
    temperature = clf.temperature_
    clf.predict_proba(X_test)
    clf.predict_proba(X_test[::-1] * 3 + 1)
    assert clf.temperature_ == temperature
    refit = TipAdapterClassifier(text_features=T).fit(X, y)
    assert refit.temperature_ == temperature
    other = TipAdapterClassifier(text_features=T).fit(X[:-4], y[:-4])
    assert other.temperature_ != temperature


def test_two_classes_proba_is_the_sigmoid_of_the_scaled_decision():
    X, y, X_test, T = _problem(n_classes=2, per_class=5)
    clf = ZeroShotClassifier(text_features=T).fit(X, y)
    margin = clf.decision_function(X_test)
    assert margin.ndim == 1
    np.testing.assert_allclose(
        clf.predict_proba(X_test)[:, 1], 1 / (1 + np.exp(-margin / clf.temperature_))
    )


def test_one_shot_per_class_and_all_shots_correct_give_a_finite_temperature():
    X, y, X_test, T = _problem(per_class=1, noise=0.05)
    clf = ZeroShotClassifier(text_features=T).fit(X, y)
    assert np.all(clf.predict(X) == y)
    low, high = np.exp(LOG_TEMPERATURE_BOUNDS)
    assert 10 * low < clf.temperature_ < high / 10
    assert np.all(np.isfinite(clf.predict_log_proba(X_test)))


def test_a_failed_calibration_leaves_no_half_fitted_estimator(monkeypatch):
    X, y, _, T = _problem()
    clf = ZeroShotClassifier(text_features=T)

    def fail(*args):
        raise RuntimeError("calibration failed")

    monkeypatch.setattr(clf, "_calibration_logits", fail)
    with pytest.raises(RuntimeError, match="calibration failed"):
        clf.fit(X, y)
    assert not [name for name in vars(clf) if name.endswith("_")]


# ------------------------------------------------------------- cross-fitted logits


def test_cross_fitted_logits_with_one_fold_per_shot_are_leave_one_out():
    X, y, _, T = _problem()
    clf = TipAdapterClassifier(text_features=T, alpha=2.0, beta=3.0).fit(X, y)
    before = {k: v for k, v in vars(clf).items() if k.endswith("_")}
    class_text = _class_text(T)
    logits = clf._cross_fitted_logits(X, y, class_text, np.random.RandomState(0), len(y))
    keys = l2_normalize(X)
    expected = tip_adapter_logits(
        100 * keys @ clf.prototypes_.T, keys @ keys.T, one_hot(y, 4), 2.0, 3.0,
        own_entries=np.arange(len(y)),
    )
    np.testing.assert_allclose(logits, expected, rtol=1e-10)
    for name, value in before.items():  # the estimator is untouched
        np.testing.assert_array_equal(getattr(clf, name), value)


def test_cross_fitted_logits_hold_out_a_share_of_every_class():
    X, y, _, T = _problem(per_class=6)
    clf = TipAdapterClassifier(text_features=T).fit(X, y)
    held_out_once = clf._cross_fitted_logits(X, y, _class_text(T), np.random.RandomState(1), 3)
    # Each shot is scored by a cache without it (and without a third of its class).
    assert not np.allclose(held_out_once, clf.decision_function(X))
    assert held_out_once.shape == (len(y), 4)


def test_cross_fitted_logits_of_single_shots():
    X, y, _, T = _problem(per_class=1)
    with_text = TipAdapterClassifier(text_features=T).fit(X, y)
    logits = with_text._cross_fitted_logits(X, y, _class_text(T), np.random.RandomState(0), 2)
    # A held-out class is known from its text only: the cache gives it no score.
    np.testing.assert_allclose(
        logits, 100 * l2_normalize(X) @ with_text.prototypes_.T + _cache_of_others(X, y)
    )
    text_free = TipAdapterClassifier(text_encoder=None).fit(X, y)
    np.testing.assert_array_equal(
        text_free._cross_fitted_logits(X, y, None, np.random.RandomState(0), 2),
        text_free.decision_function(X),
    )


def test_cross_fitted_logits_of_scored_shots_are_rows_of_all():
    X, y, _, T = _problem(per_class=6)
    clf = TipAdapterClassifier(text_features=T).fit(X, y)
    class_text = _class_text(T)
    every = clf._cross_fitted_logits(X, y, class_text, np.random.RandomState(1), 3)
    for scored in (np.array([0, 5, 17]), np.array([4])):  # the last misses two folds
        np.testing.assert_allclose(  # the products' rounding follows the batch
            clf._cross_fitted_logits(
                X, y, class_text, np.random.RandomState(1), 3, scored=scored
            ),
            every[scored], rtol=1e-12,
        )


def _cache_of_others(X, y):
    """Tip-Adapter's cache logits (alpha=1, beta=5.5) of the shots of the other fold."""
    rng = np.random.RandomState(0)  # the folds _cross_fitted_logits draws from this seed
    folds = np.empty(len(y), dtype=int)
    start = 0
    for c in range(y.max() + 1):
        members = rng.permutation(np.flatnonzero(y == c))
        folds[members] = (start + np.arange(len(members))) % 2
        start += len(members)
    keys = l2_normalize(X)
    affinity = np.exp(-5.5 * (1 - keys @ keys.T)) * (folds[:, None] != folds[None, :])
    return affinity @ one_hot(y, y.max() + 1)


def _class_text(T):
    from sklearn_cmm.text import class_text_features

    return class_text_features(
        np.arange(len(T)), T.shape[1], text_features=T, text_classes=None, class_names=None,
        templates=["{}"], text_encoder=None, with_projection=False, recorded_encoder=None,
    )


# ------------------------------------------------- each estimator's honest logits of the shots


def test_tip_adapter_calibrates_on_leave_one_out_logits():
    X, y, _, T = _problem()
    clf = TipAdapterClassifier(text_features=T, alpha=2.0, beta=3.0).fit(X, y)
    logits, labels = clf._calibration_logits(X, y, _class_text(T), np.random.RandomState(0))
    keys = l2_normalize(X)
    kernel = np.exp(-3.0 * (1 - keys @ keys.T))
    # a shot never sees its own cache entry, nor one of every other class's
    left_out = np.array(_every_class_left_out_reference(y, np.arange(len(y)), 4))
    kernel[np.arange(len(y))[:, None], left_out] = 0.0
    assert (left_out[np.arange(len(y)), y] == np.arange(len(y))).all()
    expected = 100 * keys @ l2_normalize(T).T + 2.0 * kernel @ one_hot(y, 4)
    np.testing.assert_allclose(logits, expected, rtol=1e-10)
    np.testing.assert_array_equal(labels, y)
    assert clf.temperature_ == pytest.approx(
        fit_temperature(expected, y, smoothing=laplace_smoothing(len(y))), rel=1e-6
    )


def test_text_free_zero_shot_calibrates_without_the_shot_in_its_class_mean():
    # ... and without an image of every other class in theirs
    X, y, _, _ = _problem()
    clf = ZeroShotClassifier(text_encoder=None, logit_scale=10.0).fit(X, y)
    logits, _ = clf._calibration_logits(X, y, None, np.random.RandomState(0))
    keys = l2_normalize(X)
    left_out = np.array(_every_class_left_out_reference(y, np.arange(len(y)), 4))
    for i in range(len(y)):
        for c in range(4):
            members = np.setdiff1d(np.flatnonzero(y == c), left_out[i])
            prototype = l2_normalize(keys[members].mean(axis=0))
            assert logits[i, c] == pytest.approx(10.0 * keys[i] @ prototype)
