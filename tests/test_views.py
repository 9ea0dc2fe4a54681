"""Augmented views as extra shots (``n_views``): every classifier, and the featurizer's columns.

Row ``i`` of ``X`` holds ``n_views`` embeddings side by side, the image's own first. The
wiring is checked two ways: without anything validated on the shots, a fit equals a
fit on the views as plain rows; with validation, views that duplicate their image must
change nothing (the held-out image leaves with its duplicate), which a validation that
held out single rows would fail.
"""

import numpy as np
import pytest
from PIL import Image

from sklearn_cmm import (
    CLIPFeaturizer,
    CrossModalMappingClassifier,
    SeMoBridgeClassifier,
    TipAdapterClassifier,
    ZeroShotClassifier,
    make_clip_pipeline,
)
from sklearn_cmm._augment import augmented_view, view_generators
from sklearn_cmm._embeddings import CLIPEmbeddings, recorded_views
from sklearn_cmm._math.basic import l2_normalize
from sklearn_cmm.protocol.synthetic import synthetic_problem

from .test_baselines import _every_class_left_out_reference

N_CLASSES, DIM = 5, 16


@pytest.fixture(scope="module")
def problem():
    p = synthetic_problem(N_CLASSES, 8, 6, DIM, seed=3)
    rng = np.random.RandomState(0)
    X = p["train_features"]
    views = X[:, None, :] + 0.3 * rng.randn(len(X), 2, DIM)  # two noisy views per image
    return dict(X=X, views=np.concatenate([X[:, None], views], axis=1), y=p["train_labels"],
                T=p["text_features"], W=p["text_projection"], test=p["test_features"])


def _text(problem, estimator):
    kwargs = dict(text_features=problem["T"], text_encoder=None)
    if estimator is SeMoBridgeClassifier:
        kwargs["text_projection"] = problem["W"]
    return kwargs


# Fits that validate nothing on the shots.
PLAIN = [
    (ZeroShotClassifier, {"text_features": None}),
    (TipAdapterClassifier, {"search": None}),
    (CrossModalMappingClassifier, {"image_weight": 2.0}),
    (SeMoBridgeClassifier, {"search": None}),
    (SeMoBridgeClassifier, {"search": None, "train": True, "early_stopping": False,
                            "max_iter": 20}),
]


@pytest.mark.parametrize("estimator, params", PLAIN)
def test_views_are_shots_of_their_image_class(problem, estimator, params):
    n, v = problem["views"].shape[:2]
    kwargs = {**_text(problem, estimator), "calibration": None, **params}
    with_views = estimator(n_views=v, **kwargs).fit(problem["views"].reshape(n, v * DIM),
                                                    problem["y"])
    as_rows = estimator(**kwargs).fit(problem["views"].reshape(n * v, DIM),
                                      np.repeat(problem["y"], v))
    test = problem["test"]
    # Prediction reads each row's first embedding: the others may hold anything.
    noise = np.random.RandomState(1).randn(len(test), (v - 1) * DIM)
    np.testing.assert_allclose(with_views.decision_function(np.hstack([test, noise])),
                               as_rows.decision_function(test), rtol=1e-6, atol=1e-8)
    assert with_views.n_features_in_ == v * DIM


# Fits that validate on the shots: the temperature, searches, cross-fits, early stopping.
VALIDATED = [
    (ZeroShotClassifier, {"text_features": None}),
    (SeMoBridgeClassifier, {"search": "cv", "n_search_trials": 30}),
    (SeMoBridgeClassifier, {"search": "cv", "n_search_trials": 30, "train": True,
                            "max_iter": 60, "validation_interval": 20}),
]


@pytest.mark.parametrize("estimator, params", VALIDATED)
def test_duplicate_views_leave_with_their_image(problem, estimator, params):
    X, y = problem["X"], problem["y"]
    kwargs = {**_text(problem, estimator), "random_state": 0, **params}
    plain = estimator(**kwargs).fit(X, y)
    doubled = estimator(n_views=2, **kwargs).fit(np.hstack([X, X]), y)
    test = problem["test"]
    np.testing.assert_allclose(doubled.temperature_, plain.temperature_, rtol=1e-5)
    np.testing.assert_allclose(doubled.predict_proba(np.hstack([test, test])),
                               plain.predict_proba(test), rtol=1e-4, atol=1e-6)
    for name in ("image_weight_", "alpha_", "beta_", "best_iter_"):
        assert getattr(doubled, name, None) == getattr(plain, name, None), name


def test_cmm_cross_fit_holds_out_whole_images_and_scores_their_own_rows(problem, monkeypatch):
    # CMM's fit is not invariant to duplicated rows (the ridge and the budget see the
    # count), so its cross-fit is checked by what each fold trains on and scores: rows
    # of the features normalised once (in float64).
    n, v = problem["views"].shape[:2]
    units = l2_normalize(np.asarray(problem["views"], dtype=np.float64))
    fits, scored = [], []
    fit_map, logit_terms = CrossModalMappingClassifier._fit_map, CrossModalMappingClassifier._logit_terms

    def recording_fit(self, X, y, class_text, gram=None):
        fits.append(X.copy())
        if gram is not None:  # of the rows trained on: a fold's held-out views subtracted
            np.testing.assert_allclose(gram, X.T @ X, rtol=1e-12, atol=1e-12)
        return fit_map(self, X, y, class_text, gram)

    def recording_terms(self, X):
        scored.append(X.copy())
        return logit_terms(self, X)

    monkeypatch.setattr(CrossModalMappingClassifier, "_fit_map", recording_fit)
    monkeypatch.setattr(CrossModalMappingClassifier, "_logit_terms", recording_terms)
    CrossModalMappingClassifier(**_text(problem, CrossModalMappingClassifier), n_views=v).fit(
        problem["views"].reshape(n, v * DIM), problem["y"])
    assert len(fits) == 4 and len(scored) == 3  # the final fit, then three folds
    np.testing.assert_array_equal(fits[0], units.reshape(n * v, DIM))
    held_out = []
    for trained, rows in zip(fits[1:], scored):
        images = [i for i in range(n) if any(np.array_equal(units[i, 0], r) for r in rows)]
        assert len(images) == len(rows)  # every scored row is an image's own embedding
        trained_rows = {r.tobytes() for r in trained}
        assert not any(units[i, k].tobytes() in trained_rows for i in images for k in range(v))
        assert len(trained) == (n - len(images)) * v
        held_out += images
    assert sorted(held_out) == list(range(n))


def test_tip_adapter_duplicates_double_the_cache_and_leave_with_their_image(problem):
    # A duplicated key doubles every kernel sum: alpha / 2 on duplicates is alpha on the
    # plain cache, the held-out logits (and so the temperature) included.
    X, y = problem["X"], problem["y"]
    kwargs = {**_text(problem, TipAdapterClassifier), "beta": 3.0, "search": None}
    plain = TipAdapterClassifier(alpha=2.0, **kwargs).fit(X, y)
    doubled = TipAdapterClassifier(alpha=1.0, n_views=2, **kwargs).fit(np.hstack([X, X]), y)
    np.testing.assert_allclose(doubled.temperature_, plain.temperature_, rtol=1e-6)
    test = problem["test"]
    np.testing.assert_allclose(doubled.decision_function(np.hstack([test, test])),
                               plain.decision_function(test), rtol=1e-10)


@pytest.mark.parametrize("train", [False, True])
def test_tip_adapter_search_and_fine_tuning_hold_out_whole_images(problem, monkeypatch, train):
    from sklearn_cmm import baselines

    seen = []

    def recording(zero_shot, queries, keys, labels, truth, *args, **kwargs):
        seen.append((len(queries), len(keys), kwargs.get("own_entries")))
        return correct_counts(zero_shot, queries, keys, labels, truth, *args, **kwargs)

    correct_counts = baselines.correct_counts
    monkeypatch.setattr(baselines, "correct_counts", recording)
    n, v = problem["views"].shape[:2]
    TipAdapterClassifier(**_text(problem, TipAdapterClassifier), search="cv", train=train,
                         max_iter=5, n_views=v, random_state=0).fit(
        problem["views"].reshape(n, v * DIM), problem["y"])
    if train:  # four folds of images: a quarter of them held out, their views not trained on
        folds = {(q, k) for q, k, _ in seen if q < n}  # (then perhaps leave-one-out)
        assert folds == {(n // 4, (n - n // 4) * v)}
    else:  # leave-one-out over the images, each leaving all its views (and an image of
        # every other class, with all its views)
        ((queries, keys, own),) = seen
        assert (queries, keys) == (n, n * v)
        y = problem["y"]
        images = _every_class_left_out_reference(y, np.arange(n), len(np.unique(y)))
        assert [set(row) for row in own] == [
            {i * v + view for i in row for view in range(v)} for row in images]


def test_tip_adapter_f_trains_each_view_without_its_image_keys(problem, monkeypatch):
    from sklearn_cmm._math import tip_adapter_loss

    seen = []
    loss = tip_adapter_loss.tip_adapter_f_loss

    def recording(*args, own_entries=None, **kwargs):
        seen.append(own_entries.numpy().copy())
        return loss(*args, own_entries=own_entries, **kwargs)

    monkeypatch.setattr(tip_adapter_loss, "tip_adapter_f_loss", recording)
    n, v = problem["views"].shape[:2]
    clf = TipAdapterClassifier(**_text(problem, TipAdapterClassifier), train=True, max_iter=2,
                               n_views=v, random_state=0)
    clf._train_keys(l2_normalize(problem["views"].reshape(n * v, DIM)),
                    np.repeat(problem["y"], v), l2_normalize(problem["T"]))
    rows = np.arange(n * v)
    np.testing.assert_array_equal(seen[0], (rows // v)[:, None] * v + np.arange(v))


@pytest.mark.parametrize("estimator, params", [(CrossModalMappingClassifier, {"max_iter": 0}),
                                               (SeMoBridgeClassifier, {"search": None})])
def test_transform_and_its_feature_names_have_one_embedding_per_row(problem, estimator, params):
    pd = pytest.importorskip("pandas")
    n_rows = len(problem["X"])
    X = problem["views"][:, :2].reshape(n_rows, 2 * DIM)
    clf = estimator(n_views=2, **params, **_text(problem, estimator)).fit(X, problem["y"])
    names = clf.get_feature_names_out()
    assert clf.transform(X).shape == (n_rows, DIM) == (n_rows, len(names))
    frame = clf.set_output(transform="pandas").transform(X)
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(names)


def test_n_views_must_divide_the_features(problem):
    with pytest.raises(ValueError, match="not a multiple of n_views=3"):
        ZeroShotClassifier(text_features=None, n_views=3).fit(problem["X"], problem["y"])
    with pytest.raises(ValueError, match="n_views"):
        ZeroShotClassifier(text_features=None, n_views=0).fit(problem["X"], problem["y"])


# --- the featurizer's columns ------------------------------------------------------------


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)) for _ in range(6)]


def test_columns_are_the_image_then_its_views(tiny_clip, images):
    featurizer = CLIPFeaturizer(tiny_clip.name, pretrained=tiny_clip.checkpoint, train_views=2,
                                view_output="columns", random_state=5)
    X = featurizer.fit_transform(images)
    plain = CLIPFeaturizer(tiny_clip.name, pretrained=tiny_clip.checkpoint).fit(None)
    views = [augmented_view(image, "crop_flip", rng)
             for image, generators in zip(images, view_generators(5, len(images), 2))
             for rng in generators]
    expected = np.hstack([plain.transform(images),
                          np.asarray(plain.transform(views)).reshape(len(images), -1)])
    np.testing.assert_allclose(X, expected, atol=1e-6)
    assert X.shape == (6, 3 * featurizer.embed_dim_) == (6, len(featurizer.get_feature_names_out()))
    np.testing.assert_allclose(featurizer.transform(images),
                               np.tile(plain.transform(images), 3), atol=1e-6)


def test_a_pipeline_trains_on_the_columns_and_checks_n_views(tiny_clip, images):
    labels = ["a", "b"] * 3
    featurizer = CLIPFeaturizer(tiny_clip.name, pretrained=tiny_clip.checkpoint, train_views=2,
                                view_output="columns", random_state=0)
    pipe = make_clip_pipeline(featurizer, SeMoBridgeClassifier(train=True, max_iter=5,
                                                               n_views=3))
    assert pipe.fit(images, labels).predict(images).shape == (6,)
    with pytest.raises(ValueError, match="X holds 3 embeddings per image .* set n_views=3"):
        pipe.set_params(semobridgeclassifier__n_views=1).fit(images, labels)


def test_the_views_record_survives_rows_and_pickles_not_column_slices():
    import pickle

    X = CLIPEmbeddings(np.ones((4, 3 * DIM), dtype=np.float32), None, (3, DIM))
    assert recorded_views(X) == recorded_views(X[1:3]) == 3
    assert recorded_views(pickle.loads(pickle.dumps(X))) == 3
    assert recorded_views(X[:, :DIM]) is None  # the first block alone holds one view
    assert recorded_views(np.asarray(X)) is None
    # A pickle of a version without the record: (array state, text encoder).
    old = CLIPEmbeddings(np.ones((2, DIM)))
    rebuild, args, (state, *_) = old.__reduce__()
    restored = rebuild(*args)
    restored.__setstate__((state, None))
    assert restored.views is None and restored.shape == (2, DIM)
