"""AutoML recipes (docs/user_guide/scaling_out.rst): Optuna and FLAML over the classifiers.

Each prints its best configuration (``pytest -s`` shows it). Features of 300 bundled
images are computed once, offline.
"""

import numpy as np
import pytest

from sklearn_cmm import CLIPFeaturizer, CrossModalMappingClassifier, SeMoBridgeClassifier
from sklearn_cmm.bundled import load_fashion_mnist_sample
from sklearn_cmm.model_selection import FewShotSplit


@pytest.fixture(scope="module")
def bundled():
    """Features of 300 bundled images, their string labels, the model's text encoder."""
    data = load_fashion_mnist_sample()
    featurizer = CLIPFeaturizer("sklearn-cmm-fashion-tiny", pretrained="bundled")
    X = np.asarray(featurizer.fit_transform(data.images[:300]))
    labels = np.asarray(data.target_names)[data.target[:300]]
    return X, labels, featurizer.text_encoder(), data.templates


def test_optuna_search_cv_with_few_shot_split(bundled):
    optuna = pytest.importorskip("optuna")
    from optuna_integration import OptunaSearchCV

    X, labels, text_encoder, templates = bundled
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spaces = {
        SeMoBridgeClassifier: {
            "alpha": optuna.distributions.FloatDistribution(0.1, 10.0, log=True),
            "beta": optuna.distributions.FloatDistribution(0.1, 10.0, log=True),
        },
        CrossModalMappingClassifier: {
            "triplet_weight": optuna.distributions.FloatDistribution(0.01, 10.0, log=True),
            "ridge": optuna.distributions.FloatDistribution(0.1, 10.0, log=True),
        },
    }
    for cls, space in spaces.items():
        search = OptunaSearchCV(
            cls(text_encoder=text_encoder, templates=templates, n_shots=4, random_state=0,
                **({"max_iter": 20} if cls is CrossModalMappingClassifier else {})),
            space,
            cv=FewShotSplit(n_shots=4, n_splits=2, random_state=0),
            n_trials=6,
            random_state=0,
        ).fit(X, labels)
        print(cls.__name__, search.best_params_, round(search.best_score_, 3))
        assert search.best_params_.keys() == space.keys()
        assert len(search.trials_) == 6
        assert set(search.predict(X)) <= set(labels)


def semobridge_learner(text_encoder, class_names, templates):
    """A FLAML learner of SeMoBridgeClassifier for FLAML's integer-encoded labels.

    FLAML passes ``n_jobs`` to every learner (the classifiers' ``n_jobs``, the threads of
    a fit) and replaces string labels by their index in sorted order, so the class names
    for the text side come as ``class_names={index: name}``.
    """
    from flaml import tune
    from flaml.automl.model import SKLearnEstimator

    class SeMoBridgeLearner(SKLearnEstimator):
        def __init__(self, task="classification", **config):
            super().__init__(task, **config)
            self.estimator_class = SeMoBridgeClassifier
            self.params.update(  # FLAML searches the blend: no search of its own
                text_encoder=text_encoder, class_names=class_names, templates=templates,
                search=None,
            )

        @classmethod
        def search_space(cls, data_size, task):
            return {
                "alpha": {"domain": tune.loguniform(0.1, 10.0), "init_value": 1.0},
                "beta": {"domain": tune.loguniform(0.1, 10.0), "init_value": 1.0},
            }

    return SeMoBridgeLearner


def test_flaml_automl_with_semobridge_as_custom_learner(bundled):
    flaml = pytest.importorskip("flaml")
    X, labels, text_encoder, templates = bundled
    class_names = dict(enumerate(np.unique(labels)))  # FLAML's encoding of the labels
    automl = flaml.AutoML()
    automl.add_learner("semobridge", semobridge_learner(text_encoder, class_names, templates))
    train, test = slice(0, 200), slice(200, 300)
    automl.fit(X[train], labels[train], task="classification", estimator_list=["semobridge"],
               metric="accuracy", max_iter=8, time_budget=-1, eval_method="cv", n_splits=2,
               seed=0, verbose=0)
    print("FLAML", automl.best_config, round(1 - automl.best_loss, 3))
    assert set(automl.best_config) == {"alpha", "beta"}
    assert automl.model.estimator.n_jobs == -1  # FLAML's default n_jobs reached it
    assert set(automl.predict(X[test])) <= set(labels)  # FLAML decodes the labels back
    # The text side met the class names: as good as the same classifier fitted directly.
    direct = SeMoBridgeClassifier(text_encoder=text_encoder, templates=templates,
                                  search=None, **automl.best_config)
    direct.fit(X[train], labels[train])
    np.testing.assert_array_equal(automl.predict(X[test]), direct.predict(X[test]))
