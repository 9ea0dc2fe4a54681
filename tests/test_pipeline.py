"""The text side end to end: make_clip_pipeline, recorded models, n_jobs, subsets of classes."""

import pickle
import subprocess
import sys

import numpy as np
import pytest
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.model_selection import GridSearchCV, HalvingGridSearchCV, cross_val_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline

from sklearn_cmm import (
    CLIPEmbeddings,
    CLIPFeaturizer,
    CLIPTextEncoder,
    CrossModalMappingClassifier,
    TipAdapterClassifier,
    ZeroShotClassifier,
    make_clip_pipeline,
)
from sklearn_cmm.model_selection import FewShotSplit


@pytest.fixture
def tiny_featurizer(tiny_clip):
    # By config path, so that worker processes (where the test's registration of the
    # model name does not exist) find the model too.
    return CLIPFeaturizer(tiny_clip.config_path, pretrained=tiny_clip.checkpoint)


def test_make_clip_pipeline_sets_the_text_side_on_a_clone(tiny_featurizer):
    classifier = ZeroShotClassifier()
    pipe = make_clip_pipeline(tiny_featurizer, classifier)
    assert pipe[-1].text_encoder == tiny_featurizer.text_encoder()
    assert classifier.text_encoder == "clip"  # the argument is left as it was
    assert pipe[0] is tiny_featurizer


def test_featurizer_output_records_its_model(tiny_featurizer, image_files):
    X = tiny_featurizer.fit_transform(image_files.paths)
    assert isinstance(X, CLIPEmbeddings) and isinstance(X, np.ndarray)
    assert X.text_encoder == tiny_featurizer.text_encoder()
    assert X[2:5].text_encoder == X.text_encoder  # slices (cross-validation folds) keep it
    assert pickle.loads(pickle.dumps(X)).text_encoder == X.text_encoder
    assert type(np.asarray(X)) is np.ndarray


def test_default_classifier_after_another_model_raises_what_to_pass(tiny_featurizer, image_files):
    pipe = make_pipeline(tiny_featurizer, ZeroShotClassifier())
    with pytest.raises(ValueError, match="X was embedded by CLIP model .*sklearn-cmm-test-tiny.json.*"
                       "text_encoder=CLIPTextEncoder\\(.*sklearn-cmm-test-tiny.json"):
        pipe.fit(image_files.paths, image_files.labels)


def test_searching_the_featurizer_model_cannot_mix_models(tiny_clip, image_files):
    # The classifier keeps the text encoder it was given: a grid over the featurizer's
    # weights must not silently pair other weights with it.
    pipe = make_clip_pipeline(
        CLIPFeaturizer(tiny_clip.name, pretrained=tiny_clip.checkpoint), ZeroShotClassifier()
    )
    search = GridSearchCV(pipe, {"clipfeaturizer__pretrained": [None]}, cv=2, error_score="raise")
    with pytest.raises(ValueError, match="X was embedded by"):
        search.fit(image_files.paths, image_files.labels)


def test_searching_over_whole_pipelines_pairs_each_model_with_its_text(tiny_clip, image_files):
    pipes = [make_clip_pipeline(CLIPFeaturizer(tiny_clip.name, pretrained=pretrained),
                                ZeroShotClassifier())
             for pretrained in (tiny_clip.checkpoint, None)]
    search = GridSearchCV(pipes[0], {"steps": [pipe.steps for pipe in pipes]}, cv=2,
                          error_score="raise").fit(image_files.paths, image_files.labels)
    featurizer, classifier = search.best_estimator_.steps[0][1], search.best_estimator_[-1]
    assert classifier.text_encoder == featurizer.text_encoder()
    assert len(search.cv_results_["params"]) == 2


@pytest.mark.parametrize("estimator", [ZeroShotClassifier, CrossModalMappingClassifier])
def test_precomputed_features_same_outcome_for_n_jobs_1_and_2(tiny_featurizer, image_files, estimator):
    X = tiny_featurizer.fit_transform(image_files.paths)
    y = np.asarray(image_files.labels)
    cv = FewShotSplit(n_shots=2, n_splits=2, random_state=0)
    params = {"max_iter": 0} if estimator is CrossModalMappingClassifier else {}
    good = estimator(text_encoder=tiny_featurizer.text_encoder(), **params)
    scores = [cross_val_score(good, X, y, cv=cv, n_jobs=n_jobs) for n_jobs in (1, 2)]
    np.testing.assert_array_equal(scores[0], scores[1])
    for n_jobs in (1, 2):  # the default text side raises alike in the parent and in workers
        with pytest.raises(ValueError, match="X was embedded by"):
            cross_val_score(estimator(**params), X, y, cv=cv, n_jobs=n_jobs, error_score="raise")


def test_grid_search_over_the_one_liner_with_two_workers(tiny_clip, image_files):
    pipe = make_clip_pipeline(
        CLIPFeaturizer(tiny_clip.config_path, pretrained=tiny_clip.checkpoint),
        CrossModalMappingClassifier(max_iter=0),
    )
    grid = {"crossmodalmappingclassifier__ridge": [0.5, 5.0]}
    results = [
        GridSearchCV(pipe, grid, cv=FewShotSplit(n_shots=2, n_splits=2, random_state=0), n_jobs=n_jobs)
        .fit(image_files.paths, image_files.labels)
        .cv_results_["mean_test_score"]
        for n_jobs in (1, 2)
    ]
    np.testing.assert_array_equal(results[0], results[1])


def test_loading_a_fitted_pipeline_in_a_fresh_process(tiny_featurizer, image_files, tmp_path):
    pipe = make_clip_pipeline(tiny_featurizer, ZeroShotClassifier()).fit(image_files.paths, image_files.labels)
    path = tmp_path / "pipe.pkl"
    path.write_bytes(pickle.dumps(pipe))
    expected = pipe.predict_proba(image_files.paths)
    script = (
        "import pickle, sys, numpy as np; pipe = pickle.load(open(sys.argv[1], 'rb')); "
        "np.save(sys.argv[2], pipe.predict_proba(sys.argv[3:]))"
    )
    out = tmp_path / "proba.npy"
    subprocess.run([sys.executable, "-c", script, str(path), str(out), *map(str, image_files.paths)], check=True)
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)


def _subset_problem():
    rng = np.random.RandomState(0)
    T = rng.randn(7, 16)
    y = np.repeat(np.arange(7), 6)
    X = T[y] + 0.3 * rng.randn(len(y), 16)
    return X, y, T


def test_halving_search_with_folds_lacking_a_class():
    X, y, T = _subset_problem()
    search = HalvingGridSearchCV(
        TipAdapterClassifier(text_features=T, classes=np.arange(7)),
        {"alpha": [0.5, 1.0]},
        cv=2,
        min_resources=14,
        random_state=0,
        error_score="raise",
    ).fit(X, y)
    assert search.best_score_ > 0.5


def test_one_vs_rest_fits_each_class_against_the_rest():
    X, y, T = _subset_problem()
    # Each binary problem has labels 0/1, not the original ones: text_features by class
    # cannot apply there, so one-vs-rest runs text-free; with classes= a fold of the
    # original problem lacking a class still finds its rows.
    ovr = OneVsRestClassifier(ZeroShotClassifier(text_encoder=None)).fit(X, y)
    assert ovr.score(X, y) > 0.5
    partial = ZeroShotClassifier(text_features=T, classes=np.arange(7)).fit(X[y < 5], y[y < 5])
    np.testing.assert_allclose(partial.prototypes_, T[:5] / np.linalg.norm(T[:5], axis=1, keepdims=True))
    with pytest.raises(ValueError, match="expected \\(5, 16\\).*pass classes="):
        ZeroShotClassifier(text_features=T).fit(X[y < 5], y[y < 5])


def test_a_recorded_model_does_not_change_what_is_computed(tiny_featurizer, image_files):
    X = tiny_featurizer.fit_transform(image_files.paths)
    encoder = tiny_featurizer.text_encoder()
    tagged = ZeroShotClassifier(text_encoder=encoder).fit(X, image_files.labels)
    plain = ZeroShotClassifier(text_encoder=encoder).fit(np.asarray(X), image_files.labels)
    np.testing.assert_array_equal(tagged.predict_proba(X), plain.predict_proba(np.asarray(X)))
    assert isinstance(CLIPTextEncoder(), CLIPTextEncoder)


def test_import_and_closed_form_fits_do_not_load_torch():
    code = (
        "import sys, numpy as np\n"
        "import sklearn_cmm as s\n"
        "rng = np.random.default_rng(0); T = rng.normal(size=(3, 8)); y = np.repeat([0, 1, 2], 4)\n"
        "X = T[y] + rng.normal(size=(12, 8))\n"
        "s.ZeroShotClassifier(text_features=T).fit(X, y).predict_proba(X)\n"
        "s.TipAdapterClassifier(text_features=T, search='cv').fit(X, y).predict(X)\n"
        "s.CrossModalMappingClassifier(text_features=T, max_iter=0).fit(X, y).transform(X)\n"
        "s.SeMoBridgeClassifier(text_features=T, text_projection=np.eye(8), text_encoder=None,"
        " search='cv').fit(X, y).predict(X)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
