import numpy as np
import pytest
from sklearn.base import is_classifier
from sklearn.pipeline import Pipeline

from sklearn_cmm.protocol.methods import METHODS, get_method, make_classifier, search_space

NAMES = [
    "zero-shot", "linear-probe", "tip-adapter", "tip-adapter-f", "cmm", "semobridge",
    "semobridge-t",
]


def _problem(n_classes=4, per_class=6, dim=12, seed=0):
    rng = np.random.RandomState(seed)
    concepts = rng.randn(n_classes, dim)
    y = np.repeat(np.arange(n_classes), per_class)
    X = concepts[y] + 0.5 * rng.randn(len(y), dim) + 0.7  # images off to one side
    text = {
        "text_features": concepts + 0.3 * rng.randn(n_classes, dim),
        "text_projection": np.linalg.qr(rng.randn(dim, dim))[0],
    }
    return X, y, text


def test_registry_has_the_seven_methods():
    assert list(METHODS) == NAMES
    with pytest.raises(ValueError, match="Unknown method"):
        get_method("clip-lora")


@pytest.mark.parametrize("name", NAMES)
def test_every_method_and_candidate_fits_and_predicts(name):
    X, y, text = _problem()
    candidates = search_space(name)
    assert candidates and all(isinstance(c, dict) for c in candidates)
    for params in candidates:
        if name == "semobridge-t":
            params = {**params, "max_iter": 5, "warmup_iter": 1}
        if name == "tip-adapter-f":
            params = {**params, "max_iter": 5}
        clf = make_classifier(name, **text, random_state=0, device="cpu", **params)
        assert is_classifier(clf)
        assert clf.fit(X, y).score(X, y) > 0.5
        assert clf.predict(X[:3]).shape == (3,)
        assert clf.decision_function(X).shape == (len(y), 4)


def test_text_goes_where_it_is_used():
    X, y, text = _problem()
    zero_shot = make_classifier("zero-shot", **text)
    assert zero_shot.text_encoder is None and zero_shot.text_features is text["text_features"]
    semobridge = make_classifier("semobridge-t", **text, device="cpu")
    assert semobridge.train and semobridge.text_projection is text["text_projection"]
    assert semobridge.device == "cpu"
    tip_f = make_classifier("tip-adapter-f", **text, device="cpu")
    assert tip_f.train and tip_f.text_features is text["text_features"] and tip_f.device == "cpu"
    probe = make_classifier("linear-probe", **text, random_state=3)
    assert isinstance(probe, Pipeline)
    assert probe.get_params()["logisticregression__random_state"] == 3
    # Without text, each estimator keeps its own default (CLIP text from the featurizer).
    assert make_classifier("cmm").text_encoder == "clip"


def test_overrides_win_and_unknown_parameters_fail():
    assert make_classifier("linear-probe", C=0.5).get_params()["logisticregression__C"] == 0.5
    assert make_classifier("semobridge-t", max_iter=7).max_iter == 7
    assert make_classifier("cmm", triplet_weight=0.0, max_iter=3).max_iter == 3
    with pytest.raises(ValueError, match="no parameter"):
        make_classifier("zero-shot", alpha=1.0)


def test_fresh_estimators_and_seeded_fits():
    X, y, text = _problem()
    a = make_classifier("cmm", **text, random_state=0, device="cpu")
    b = make_classifier("cmm", **text, random_state=0, device="cpu")
    assert a is not b
    np.testing.assert_allclose(a.fit(X, y).decision_function(X),
                               b.fit(X, y).decision_function(X))


def test_search_spaces_are_small():
    assert search_space("zero-shot") == [{}]
    assert all(len(search_space(name)) <= 7 for name in NAMES)
    assert {"alpha": 1.0, "beta": 5.5, "search": None} in search_space("tip-adapter")
    # The grids' blends are fitted as given, not searched again by the default search="cv".
    assert all(c["search"] is None for c in search_space("tip-adapter"))
    assert {"search": "cv", "n_search_trials": 50} in search_space("semobridge")
    assert sum("search" not in c or c["search"] is not None
               for c in search_space("semobridge")) == 1
    assert {"max_iter": 0} in search_space("cmm")
