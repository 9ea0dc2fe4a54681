import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_cmm import TipAdapterClassifier, ZeroShotClassifier
from sklearn_cmm.model_selection import FewShotSplit

from .test_text import HashEncoder


def _problem(seed=0, n_classes=4, per_class=12, dim=16, noise=0.6):
    rng = np.random.RandomState(seed)
    directions = rng.randn(n_classes, dim)
    y = np.repeat(np.arange(n_classes), per_class)
    X = directions[y] + noise * rng.randn(len(y), dim)
    return X, y, directions


def test_zero_shot_is_argmax_cosine_to_text():
    X, y, T = _problem()
    clf = ZeroShotClassifier(text_features=T).fit(X, y)
    cos = (X / np.linalg.norm(X, axis=1, keepdims=True)) @ (
        T / np.linalg.norm(T, axis=1, keepdims=True)
    ).T
    np.testing.assert_allclose(clf.decision_function(X), 100 * cos)
    np.testing.assert_array_equal(clf.predict(X), np.argmax(cos, axis=1))
    assert clf.prototype_source_ == "text"


def test_zero_shot_ignores_training_images_with_text():
    X, y, T = _problem()
    a = ZeroShotClassifier(text_features=T).fit(X, y)
    b = ZeroShotClassifier(text_features=T).fit(X[::-1] * 3, y[::-1])
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(X))


def test_text_free_uses_image_means():
    X, y, _ = _problem()
    clf = ZeroShotClassifier(text_encoder=None).fit(X, y)
    assert clf.prototype_source_ == "image_means"
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    means = np.array([Xn[y == k].mean(0) for k in range(4)])
    np.testing.assert_allclose(clf.prototypes_, means / np.linalg.norm(means, axis=1)[:, None])


def test_tip_adapter_formula():
    X, y, T = _problem()
    clf = TipAdapterClassifier(text_features=T, alpha=2.0, beta=3.0).fit(X, y)
    Q = X[:5] / np.linalg.norm(X[:5], axis=1, keepdims=True)
    K = X / np.linalg.norm(X, axis=1, keepdims=True)
    Tn = T / np.linalg.norm(T, axis=1, keepdims=True)
    expected = 100 * Q @ Tn.T + 2.0 * np.exp(-3.0 * (1 - Q @ K.T)) @ np.eye(4)[y]
    np.testing.assert_allclose(clf.decision_function(X[:5]), expected)


def test_tip_adapter_alpha_zero_is_zero_shot():
    X, y, T = _problem()
    tip = TipAdapterClassifier(text_features=T, alpha=0.0).fit(X, y)
    zs = ZeroShotClassifier(text_features=T).fit(X, y)
    np.testing.assert_allclose(tip.decision_function(X), zs.decision_function(X))


def test_tip_adapter_search_uses_training_shots_only():
    # Text prototypes point the wrong way for two classes: the cache must take over.
    # logit_scale=10 puts the zero-shot logits on CLIP's scale for these wide cosines.
    X, y, T = _problem(seed=3, per_class=30, noise=1.0)
    T_bad = T.copy()
    T_bad[[0, 1]] = T[[1, 0]]
    train = FewShotSplit(8, 1, random_state=0)
    tr, te = next(train.split(X, y))
    searched = TipAdapterClassifier(
        text_features=T_bad, alpha=0.0, logit_scale=10.0, search="cv", random_state=0
    ).fit(X[tr], y[tr])
    fixed = TipAdapterClassifier(text_features=T_bad, alpha=0.0, logit_scale=10.0)
    fixed.fit(X[tr], y[tr])
    assert searched.alpha_ > 0
    assert 0 <= searched.search_score_ <= 1
    assert searched.score(X[te], y[te]) > fixed.score(X[te], y[te])
    again = clone(searched)
    assert again.fit(X[tr], y[tr]).alpha_ == searched.alpha_


def test_n_shots_draw_is_reproducible():
    X, y, T = _problem(per_class=10)
    a = TipAdapterClassifier(text_features=T, n_shots=2, random_state=0).fit(X, y)
    b = TipAdapterClassifier(text_features=T, n_shots=2, random_state=0).fit(X, y)
    assert a.cache_keys_.shape == (8, X.shape[1])
    np.testing.assert_array_equal(a.cache_keys_, b.cache_keys_)
    with pytest.raises(ValueError, match="fewer samples"):
        TipAdapterClassifier(text_features=T, n_shots=11).fit(X, y)


@pytest.mark.parametrize("Estimator", [ZeroShotClassifier, TipAdapterClassifier])
def test_string_labels_dataframe_float32_pickle(Estimator):
    X, y, T = _problem()
    labels = np.array(["w", "x", "y", "z"])[y]
    frame = pd.DataFrame(X.astype(np.float32), columns=[f"f{i}" for i in range(X.shape[1])])
    clf = Estimator(text_features={c: T[k] for k, c in enumerate("wxyz")}).fit(frame, labels)
    # String labels and a DataFrame give the predictions of integer labels on the array.
    integer = Estimator(text_features=T).fit(X.astype(np.float32), y)
    np.testing.assert_array_equal(clf.predict(frame), np.array(list("wxyz"))[integer.predict(X.astype(np.float32))])
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_allclose(restored.predict_proba(frame), clf.predict_proba(frame))
    np.testing.assert_allclose(clf.predict_proba(frame).sum(axis=1), 1.0)


def test_grid_search_over_shots_and_weights():
    X, y, T = _problem(per_class=10)
    search = GridSearchCV(
        TipAdapterClassifier(text_features=T, random_state=0),
        {"n_shots": [1, 2, 4], "alpha": [0.5, 2.0]},
        cv=FewShotSplit(n_shots=4, n_splits=2, random_state=0),
    ).fit(X, y)
    assert search.best_params_["n_shots"] in (1, 2, 4)
    assert search.best_estimator_.cache_keys_.shape[0] == 4 * search.best_params_["n_shots"]


@pytest.mark.parametrize(
    "params, error",
    [
        ({"alpha": -1.0}, InvalidParameterError),
        ({"search": "grid"}, InvalidParameterError),
        ({"text_encoder": "openai"}, InvalidParameterError),
        ({"templates": ["no placeholder"]}, ValueError),
    ],
)
def test_bad_parameters(params, error):
    X, y, T = _problem()
    with pytest.raises(error):
        TipAdapterClassifier(text_features=T, **params).fit(X, y)


def test_bad_inputs_name_the_problem():
    X, y, T = _problem()
    with pytest.raises(ValueError, match="dimension"):
        ZeroShotClassifier(text_features=T[:, :5]).fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        ZeroShotClassifier(text_features=T).fit(np.where(X > 2, np.nan, X), y)
    with pytest.raises(ValueError, match="class_names"):
        ZeroShotClassifier(text_encoder=HashEncoder(dim=16)).fit(X, y)
