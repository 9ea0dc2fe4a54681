"""Reprs of the classifiers: array parameters show shape and dtype, never their values."""

import numpy as np
import pytest

from sklearn_cmm import (
    CrossModalMappingClassifier,
    SeMoBridgeClassifier,
    TipAdapterClassifier,
    ZeroShotClassifier,
)
from sklearn_cmm._base import summarize_arrays

RNG = np.random.default_rng(0)
T = RNG.normal(size=(10, 64))
VALUE = f"{T[0, 0]:.4f}"[:5]  # the first digits of a value, as numpy would print them


@pytest.mark.parametrize(
    "cls", [CrossModalMappingClassifier, SeMoBridgeClassifier, TipAdapterClassifier,
            ZeroShotClassifier]
)
def test_text_features_repr_is_shape_and_dtype(cls):
    clf = cls(text_features=T.astype(np.float32))
    text = repr(clf)
    assert text == f"{cls.__name__}(text_features=<ndarray (10, 64) float32>)"
    html = clf._repr_html_()
    assert VALUE not in text and VALUE not in html
    # The fallback text and the parameter table both show the summary whole.
    assert html.count("&lt;ndarray (10, 64) float32&gt;") >= 2
    assert clf.text_features.dtype == np.float32  # the parameter itself is untouched


def test_repr_of_several_arrays_and_a_dict():
    clf = SeMoBridgeClassifier(text_features={"cat": T[0], "dog": T[1]},
                               text_projection=np.eye(64), n_shots=4)
    assert repr(clf) == (
        "SeMoBridgeClassifier(n_shots=4, text_features={'cat': <ndarray (64,) float64>, "
        "'dog': <ndarray (64,) float64>}, text_projection=<ndarray (64, 64) float64>)"
    )
    assert clf.get_params()["text_projection"] is clf.text_projection


def test_repr_of_a_fitted_classifier_is_the_same():
    X = np.repeat(T, 3, axis=0) + RNG.normal(scale=0.1, size=(30, 64))
    clf = CrossModalMappingClassifier(text_features=T, max_iter=0)
    before = repr(clf)
    assert repr(clf.fit(X, np.repeat(np.arange(10), 3))) == before
    assert VALUE not in clf._repr_html_()


def test_summarize_arrays_leaves_other_values():
    assert summarize_arrays(None) is None
    templates = ["a photo of a {}."]
    assert summarize_arrays(templates) is templates
    assert repr(summarize_arrays({"a": 1, "b": np.zeros((2, 3), dtype=np.int8)})) == (
        "{'a': 1, 'b': <ndarray (2, 3) int8>}"
    )
