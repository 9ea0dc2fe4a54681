"""scikit-learn's estimator checks on every public classifier (text-free mode)."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from sklearn_cmm import (
    CrossModalMappingClassifier,
    SeMoBridgeClassifier,
    TipAdapterClassifier,
    ZeroShotClassifier,
)

ESTIMATORS = [
    ZeroShotClassifier(text_encoder=None),
    TipAdapterClassifier(text_encoder=None, search=None, random_state=0),
    TipAdapterClassifier(text_encoder=None, n_search_trials=20, random_state=0),
    TipAdapterClassifier(text_encoder=None, train=True, max_iter=5, n_search_trials=20,
                         random_state=0),
    SeMoBridgeClassifier(text_encoder=None, search=None, random_state=0),
    SeMoBridgeClassifier(text_encoder=None, n_search_trials=20, random_state=0),
    SeMoBridgeClassifier(text_encoder=None, train=True, max_iter=5, n_search_trials=20,
                         random_state=0),
    CrossModalMappingClassifier(text_encoder=None, random_state=0),
    CrossModalMappingClassifier(
        text_encoder=None, init="identity", train_text=True, max_iter=5, random_state=0
    ),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize("Classifier", [TipAdapterClassifier, SeMoBridgeClassifier])
def test_non_deterministic_tag_names_every_unseeded_draw(Classifier):
    # The search's candidates, the training's folds and the held-out subset of the
    # calibration draw from random_state; with none of them a fit draws nothing.
    def tag(**params):
        return Classifier(**params).__sklearn_tags__().non_deterministic

    plain = {"search": None, "calibration": None}
    assert not tag(**plain)
    assert tag(**plain, n_shots=4)
    assert tag(search=None)
    assert tag(calibration=None)
    assert tag(**plain, train=True)
    assert not tag(random_state=0, train=True, n_shots=4)
    assert not ZeroShotClassifier().__sklearn_tags__().non_deterministic
    assert not CrossModalMappingClassifier().__sklearn_tags__().non_deterministic


@pytest.mark.parametrize("estimator", ESTIMATORS[::2], ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("bad_fit", ["one class", "labels outside classes", "width"])
def test_a_failed_refit_leaves_the_estimator_unfitted(estimator, bad_fit):
    # validate_data sets n_features_in_ and the labels classes_ before the fit's checks
    # fail: kept, the new classes_ would name the earlier fit's columns
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((12, 6)), np.repeat(["a", "b", "c"], 4)
    estimator = clone(estimator).fit(X, y)
    if bad_fit == "one class":
        X_bad, y_bad = X, np.full(12, "x")
    elif bad_fit == "labels outside classes":
        estimator.set_params(classes=["a", "b", "c"])
        X_bad, y_bad = X, np.repeat(["x", "y", "z"], 4)
    else:  # not a multiple of n_views
        estimator.set_params(n_views=4)
        X_bad, y_bad = X, y
    with pytest.raises(ValueError):
        estimator.fit(X_bad, y_bad)
    with pytest.raises(NotFittedError):
        check_is_fitted(estimator)
    assert not [name for name in vars(estimator) if name.endswith("_")
                and not name.startswith("_")]
