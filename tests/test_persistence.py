"""skops and MLflow round trips of every fitted estimator and of the pipeline."""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

from sklearn_cmm import (
    CLIPEmbeddings,
    CrossModalMappingClassifier,
    SeMoBridgeClassifier,
    TipAdapterClassifier,
    ZeroShotClassifier,
    make_clip_pipeline,
    skops_trusted_types,
)
from sklearn_cmm.model_selection import FewShotSplit

sio = pytest.importorskip("skops.io")

CLASSIFIERS = {
    "zero-shot": ZeroShotClassifier(),
    "tip-adapter": TipAdapterClassifier(),
    "tip-adapter-cv": TipAdapterClassifier(search="cv", n_search_trials=10, random_state=0),
    "cmm": CrossModalMappingClassifier(max_iter=3, random_state=0),
    "cmm-identity-train-text": CrossModalMappingClassifier(
        init="identity", train_text=True, max_iter=3, random_state=0
    ),
    "semobridge": SeMoBridgeClassifier(),
    "semobridge-cv": SeMoBridgeClassifier(search="cv", n_search_trials=10, random_state=0),
    "semobridge-t": SeMoBridgeClassifier(train=True, max_iter=3, random_state=0),
}


def assert_same_outputs(loaded, fitted, X):
    assert type(loaded) is type(fitted)
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))


def skops_round_trip(estimator):
    dumped = sio.dumps(estimator)
    # The documented list covers everything of the package's that skops does not trust.
    assert set(sio.get_untrusted_types(data=dumped)) <= set(skops_trusted_types())
    return sio.loads(dumped, trusted=skops_trusted_types())


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_skops_round_trip_of_every_fitted_classifier(name, featurizer, features):
    X, y = features
    text_side = {"text_encoder": featurizer.text_encoder()}
    for params in (text_side, {"text_encoder": None}):  # with text, and text-free
        fitted = CLASSIFIERS[name].set_params(**params).fit(X, y)
        assert_same_outputs(skops_round_trip(fitted), fitted, X)


def test_skops_round_trip_of_the_pipeline(featurizer, image_files):
    pipe = make_clip_pipeline(featurizer, SeMoBridgeClassifier())
    pipe.fit(image_files.paths, image_files.labels)
    assert_same_outputs(skops_round_trip(pipe), pipe, image_files.paths)


def test_skops_round_trip_of_a_search_with_few_shot_split(featurizer, features):
    X, y = features
    search = GridSearchCV(
        ZeroShotClassifier(text_encoder=featurizer.text_encoder()),
        {"calibration": [None, "temperature"]},
        cv=FewShotSplit(n_shots=2, n_splits=2, random_state=0),
    ).fit(X, y)
    dumped = sio.dumps(search)
    # What a search adds is scikit-learn's scorer type, which the user trusts by name.
    sklearn_types = set(sio.get_untrusted_types(data=dumped)) - set(skops_trusted_types())
    assert sklearn_types == {"sklearn.metrics._scorer._PassthroughScorer"}
    loaded = sio.loads(dumped, trusted=skops_trusted_types() + sorted(sklearn_types))
    assert_same_outputs(loaded, search, X)
    assert loaded.cv.get_n_splits() == 2


def test_paths_are_trusted_under_both_of_their_module_names():
    # Python 3.13 moved them to pathlib._local: a file names them as its Python did
    for name in ("PosixPath", "WindowsPath"):
        assert {f"pathlib.{name}", f"pathlib._local.{name}"} <= set(skops_trusted_types())


def test_skops_loads_clip_embeddings_without_their_record(features):
    X, _ = features
    loaded = skops_round_trip(X)
    assert type(loaded) is CLIPEmbeddings and loaded.text_encoder is None
    np.testing.assert_array_equal(loaded, X)


@pytest.mark.slow  # about 30-60 s: MLflow creates its database and infers requirements
def test_mlflow_logs_and_loads_the_pipeline_with_its_requirements(
    featurizer, image_files, tmp_path, monkeypatch
):
    mlflow = pytest.importorskip("mlflow")
    from importlib.metadata import version

    import mlflow.sklearn

    monkeypatch.chdir(tmp_path)  # the artifacts go to ./mlruns
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")  # loading runs code
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    pipe = make_clip_pipeline(featurizer, CrossModalMappingClassifier(max_iter=3, random_state=0))
    pipe.fit(image_files.paths, image_files.labels)
    torch_side = [f"{name}=={version(name)}" for name in ("torch", "open_clip_torch")]
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipe,
            name="model",
            skops_trusted_types=skops_trusted_types(),
            extra_pip_requirements=torch_side,
        )
    requirements = mlflow.pyfunc.get_model_dependencies(info.model_uri)
    with open(requirements) as f:
        recorded = f.read().split()
    assert set(torch_side) <= set(recorded)
    loaded = mlflow.sklearn.load_model(info.model_uri)
    assert_same_outputs(loaded, pipe, image_files.paths)
