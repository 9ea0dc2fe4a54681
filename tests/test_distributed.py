"""Searches under joblib's Dask and Ray backends: the same cv_results_ as in one process.

Each backend runs on a local cluster of 2 worker processes that the test starts and stops.
"""

import numpy as np
import pytest
from joblib import parallel_config
from sklearn.model_selection import GridSearchCV, cross_validate

from sklearn_cmm import (
    CrossModalMappingClassifier,
    SeMoBridgeClassifier,
    TipAdapterClassifier,
    ZeroShotClassifier,
    make_clip_pipeline,
)
from sklearn_cmm.model_selection import FewShotSplit

SEARCHES = {
    "zero-shot": (ZeroShotClassifier(), {"calibration": [None, "temperature"]}),
    # The grid chooses alpha, so the estimator's own search of it is off.
    "tip-adapter": (TipAdapterClassifier(search=None),
                    {"alpha": [0.5, 1.0], "n_shots": [2, 3]}),
    "cmm": (CrossModalMappingClassifier(max_iter=3, random_state=0),
            {"triplet_weight": [0.1, 1.0], "n_shots": [2, 3]}),
    "semobridge": (SeMoBridgeClassifier(random_state=0), {"n_shots": [2, 3]}),
}


# Ray's joblib backend starts its worker processes for every search: minutes, so slow.
@pytest.fixture(params=["dask", pytest.param("ray", marks=pytest.mark.slow)])
def cluster_backend(request):
    """The name of a joblib backend running on 2 local worker processes."""
    if request.param == "dask":
        request.getfixturevalue("dask_client")
    else:
        request.getfixturevalue("ray_cluster")
        from ray.util.joblib import register_ray

        register_ray()
    return request.param


def without_timings(results):
    return {key: value for key, value in results.items() if not key.endswith("_time")}


def assert_same_results(distributed, single):
    assert distributed.keys() == single.keys()
    for key, value in single.items():
        if np.ma.isMaskedArray(value):
            assert distributed[key].tolist() == value.tolist(), key
        else:
            np.testing.assert_array_equal(distributed[key], value, err_msg=key)


@pytest.mark.parametrize("name", SEARCHES)
def test_grid_search_and_cross_validate_on_a_cluster(name, cluster_backend, featurizer, features):
    X, y = features
    estimator, grid = SEARCHES[name]
    estimator = estimator.set_params(text_encoder=featurizer.text_encoder())
    cv = FewShotSplit(n_shots=3, n_splits=3, random_state=0)
    single = GridSearchCV(estimator, grid, cv=cv, n_jobs=1).fit(X, y)
    with parallel_config(cluster_backend, n_jobs=2):
        spread = GridSearchCV(estimator, grid, cv=cv).fit(X, y)
        spread_cv = cross_validate(estimator, X, y, cv=cv, return_train_score=True)
    assert_same_results(without_timings(spread.cv_results_), without_timings(single.cv_results_))
    single_cv = cross_validate(estimator, X, y, cv=cv, return_train_score=True, n_jobs=1)
    assert_same_results(without_timings(spread_cv), without_timings(single_cv))


def test_grid_search_of_the_pipeline_on_a_cluster(cluster_backend, featurizer, image_files):
    # Each worker loads the featurizer's weights itself, from the checkpoint path.
    pipe = make_clip_pipeline(featurizer, SeMoBridgeClassifier(random_state=0))
    grid = {"semobridgeclassifier__n_shots": [2, 3], "clipfeaturizer__batch_size": [4, 64]}
    cv = FewShotSplit(n_shots=3, n_splits=2, random_state=0)
    paths, labels = image_files.paths, image_files.labels
    single = GridSearchCV(pipe, grid, cv=cv, n_jobs=1).fit(paths, labels)
    with parallel_config(cluster_backend, n_jobs=2):
        spread = GridSearchCV(pipe, grid, cv=cv).fit(paths, labels)
    assert_same_results(without_timings(spread.cv_results_), without_timings(single.cv_results_))
    np.testing.assert_array_equal(spread.predict(paths), single.predict(paths))
