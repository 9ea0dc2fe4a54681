"""scikit-learn's estimator checks on every public classifier (text-free mode)."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_cmm import (
    CrossModalMappingClassifier,
    SeMoBridgeClassifier,
    TipAdapterClassifier,
    ZeroShotClassifier,
)

ESTIMATORS = [
    ZeroShotClassifier(text_encoder=None),
    TipAdapterClassifier(text_encoder=None),
    TipAdapterClassifier(text_encoder=None, search="cv", n_search_trials=20, random_state=0),
    TipAdapterClassifier(text_encoder=None, train=True, max_iter=5, random_state=0),
    SeMoBridgeClassifier(text_encoder=None, random_state=0),
    SeMoBridgeClassifier(text_encoder=None, search="cv", n_search_trials=20, random_state=0),
    SeMoBridgeClassifier(text_encoder=None, train=True, max_iter=5, random_state=0),
    CrossModalMappingClassifier(text_encoder=None, random_state=0),
    CrossModalMappingClassifier(
        text_encoder=None, init="identity", train_text=True, max_iter=5, random_state=0
    ),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
