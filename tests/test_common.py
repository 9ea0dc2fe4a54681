"""scikit-learn's estimator checks on every public classifier (text-free mode)."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

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
