import pickle
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_cmm import TipAdapterClassifier, ZeroShotClassifier, baselines
from sklearn_cmm._math.basic import l2_normalize, loo_prototype_cosine, one_hot, view_rows
from sklearn_cmm._math.search import held_out_subset, random_candidates
from sklearn_cmm._math.semobridge import validation_folds
from sklearn_cmm._math.tip_adapter import (
    cache_indicator,
    correct_counts,
    tip_adapter_logits,
)
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
    fixed = TipAdapterClassifier(text_features=T_bad, alpha=0.0, logit_scale=10.0, search=None)
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


# --- Tip-Adapter at scale: the search's math, bounded predictions ------------------------


def _unit(rng, shape):
    return l2_normalize(rng.randn(*shape))


def _loo_accuracy_reference(zs, keys, labels, n_classes, queries, alpha, beta, left_out=None):
    # The obvious way: the dense one-hot and the full kernel, each query's own entry (or
    # its left_out entries) zeroed.
    logits = tip_adapter_logits(zs[queries], keys[queries] @ keys.T, one_hot(labels, n_classes),
                                alpha, beta, own_entries=queries if left_out is None else left_out)
    return np.mean(np.argmax(logits, axis=1) == labels[queries])


def _every_class_left_out_reference(y, images, n_classes):
    """Per held-out image, the image each class leaves out: itself in its own class; in
    every other class of two or more, that class's image of the query's rank (modulo the
    number of choices, then the class's size)."""
    n_choices = max(1, len(images) // n_classes)
    rows = []
    for i in images:
        rank = sum(y[j] == y[i] for j in range(i))
        row = []
        for c in range(n_classes):
            members = [j for j in range(len(y)) if y[j] == c]
            if c == y[i]:
                row.append(i)
            elif len(members) > 1:
                row.append(members[(rank % n_choices) % len(members)])
        rows.append(row)
    return rows


def _as_sets(rows):
    return [set(row) for row in rows]


@pytest.mark.parametrize("block_entries, n_classes", [(2**22, 5), (30, 5), (2**22, 60)])
def test_correct_counts_leave_one_out_match_the_dense_reference(block_entries, n_classes):
    # 60 classes: few of them can win, and only those are compared.
    rng = np.random.RandomState(0)
    labels = np.repeat(np.arange(n_classes), 4)
    labels = labels[rng.permutation(len(labels))]
    centers = _unit(rng, (n_classes, 6))
    keys = l2_normalize(centers[labels] + 0.5 * rng.randn(len(labels), 6))
    zs = 3 * keys @ l2_normalize(centers + 0.5 * rng.randn(n_classes, 6)).T
    queries = np.arange(1, len(labels), 3)
    candidates = random_candidates({"alpha": (0.0, 10.0), "beta": (0.1, 10.0)},
                                   {"alpha": 1.0, "beta": 5.5}, 40, rng, shared="beta")
    candidates += [{"alpha": 2.0, "beta": 0.7}, {"alpha": 4.0, "beta": 9.1}]  # not a grid
    accuracies = correct_counts(zs[queries], keys[queries], keys, labels, labels[queries],
                                n_classes, candidates, own_entries=queries,
                                block_entries=block_entries) / len(queries)
    expected = [_loo_accuracy_reference(zs, keys, labels, n_classes, queries, **c)
                for c in candidates]
    np.testing.assert_allclose(accuracies, expected)
    assert len(set(expected)) > 1  # the candidates differ, so the check has teeth


@pytest.mark.parametrize("block_entries", [2**22, 30])
def test_correct_counts_leave_out_every_view_of_the_query_image(block_entries):
    rng = np.random.RandomState(4)
    n_views, labels_images = 3, np.repeat(np.arange(5), 3)
    labels = np.repeat(labels_images, n_views)
    keys = _unit(rng, (len(labels), 6))
    zs = 3 * keys[::n_views] @ _unit(rng, (5, 6)).T
    images = np.arange(0, len(labels_images), 2)
    own = view_rows(images, n_views).reshape(len(images), n_views)
    candidates = random_candidates({"alpha": (0.0, 10.0), "beta": (0.1, 10.0)},
                                   {"alpha": 1.0, "beta": 5.5}, 30, rng, shared="beta")
    queries = keys[images * n_views]
    counts = correct_counts(zs[images], queries, keys, labels, labels_images[images], 5,
                            candidates, own_entries=own, block_entries=block_entries)
    expected = []
    for c in candidates:
        kernel = np.exp(-c["beta"] * (1 - queries @ keys.T))
        kernel[np.arange(len(images))[:, None], own] = 0.0
        logits = zs[images] + c["alpha"] * kernel @ one_hot(labels, 5)
        expected.append(np.sum(logits.argmax(1) == labels_images[images]))
    np.testing.assert_array_equal(counts, expected)
    assert len(set(expected)) > 1


def test_cache_indicator_is_the_one_hot_matrix():
    labels = np.array([2, 0, 2, 1])
    np.testing.assert_array_equal(cache_indicator(labels, 4).toarray(), one_hot(labels, 4))


def test_loo_class_mean_cosine_is_loo_prototype_cosine_of_the_queries():
    rng = np.random.RandomState(1)
    labels = np.array([0, 0, 1, 1, 1, 2, 3, 3])  # class 2 has one item: it scores 0
    keys = _unit(rng, (8, 5))
    queries = np.array([1, 4, 5, 7])
    np.testing.assert_allclose(loo_prototype_cosine(keys[queries], keys, labels, 4, queries),
                               loo_prototype_cosine(keys, keys, labels, 4)[queries])


@pytest.mark.parametrize("n_trials", [1, 2, 5, 50, 200])
def test_shared_candidates_share_an_evenly_spaced_grid(n_trials):
    space = {"alpha": (0.0, 10.0), "beta": (0.1, 10.0)}
    candidates = random_candidates(space, {"alpha": 1.0, "beta": 5.5}, n_trials, 0, shared="beta")
    assert len(candidates) == n_trials and candidates[0] == {"alpha": 1.0, "beta": 5.5}
    betas = [c["beta"] for c in candidates[1:]]
    grid = sorted(set(betas))
    assert len(grid) == int(np.ceil(np.sqrt(n_trials - 1)))
    assert betas == sorted(betas)  # runs of one value are adjacent
    if len(grid) > 1:
        np.testing.assert_allclose(np.diff(grid), 9.9 / len(grid))
    assert all(0.1 <= b <= 10 and 0 <= c["alpha"] <= 10 for b, c in zip(betas, candidates[1:]))


@pytest.mark.parametrize("text", [True, False])
def test_search_score_is_the_true_leave_one_out_accuracy(text):
    # The estimator-level check of "leave the shot out": the search's score must be the
    # accuracy of refitting without each shot and predicting it. A search that let each
    # shot see itself would score 1.0 here (alpha and beta large enough to memorise).
    X, y, T = _problem(seed=4, per_class=6, noise=2.5)
    params = dict(logit_scale=10.0, search="cv", n_search_trials=30, random_state=0)
    if text:
        params["text_features"] = T
    else:
        params["text_encoder"] = None
    searched = TipAdapterClassifier(**params).fit(X, y)
    fixed = {**params, "search": None, "alpha": searched.alpha_, "beta": searched.beta_}
    # every class an image short: the shot itself, and one image of every other class
    left_out = _every_class_left_out_reference(y, np.arange(len(y)), 4)
    hits = [
        TipAdapterClassifier(**fixed).fit(np.delete(X, row, 0), np.delete(y, row))
        .predict(X[i : i + 1])[0] == y[i]
        for i, row in enumerate(left_out)
    ]
    assert searched.search_score_ == pytest.approx(np.mean(hits))
    assert searched.search_score_ < 1.0
    memorising = TipAdapterClassifier(**{**fixed, "alpha": 10.0, "beta": 10.0}).fit(X, y)
    assert memorising.score(X, y) == 1.0  # what a search without leave-one-out would see


def test_search_chooses_the_brute_force_best_weights():
    # Every candidate's dense leave-one-out accuracy, the first best: the estimator's
    # choice, its score, and the same again with the same random_state.
    X, y, T = _problem(seed=2, per_class=6, noise=1.5)
    params = dict(text_features=T, logit_scale=10.0, search="cv", n_search_trials=40,
                  random_state=0)
    clf = TipAdapterClassifier(**params).fit(X, y)
    candidates = random_candidates({"alpha": (0.0, 10.0), "beta": (0.1, 10.0)},
                                   {"alpha": 1.0, "beta": 5.5}, 40, np.random.RandomState(0),
                                   shared="beta")
    keys = l2_normalize(X)
    zs = 10.0 * keys @ l2_normalize(T).T
    left_out = _every_class_left_out_reference(y, np.arange(len(y)), 4)
    accuracies = [_loo_accuracy_reference(zs, keys, y, 4, np.arange(len(y)), **c,
                                          left_out=left_out)
                  for c in candidates]
    best = candidates[int(np.argmax(accuracies))]
    assert (clf.alpha_, clf.beta_) == (best["alpha"], best["beta"])
    assert clf.search_score_ == pytest.approx(max(accuracies))
    assert len(set(accuracies)) > 2
    again = TipAdapterClassifier(**params).fit(X, y)
    assert (again.alpha_, again.beta_, again.search_score_) == (
        clf.alpha_, clf.beta_, clf.search_score_)


def test_search_subsamples_left_out_shots_at_scale(monkeypatch):
    X, y, T = _problem(per_class=12)
    seen = []

    def recording(zero_shot, queries, keys, labels, truth, n_classes, candidates, **kwargs):
        seen.append(kwargs["own_entries"])
        return correct_counts(zero_shot, queries, keys, labels, truth, n_classes, candidates,
                              **kwargs)

    drawn = []

    def subset(*args):
        drawn.append(held_out_subset(*args))
        return drawn[-1]

    monkeypatch.setattr(baselines, "correct_counts", recording)
    monkeypatch.setattr(baselines, "held_out_subset", subset)
    monkeypatch.setattr(baselines, "MAX_HELD_OUT", 10)
    clf = TipAdapterClassifier(text_features=T, search="cv", random_state=0).fit(X, y)
    (own,) = seen  # each query image's rows: an image of each class, without views
    queries = drawn[0]
    assert own.shape == (10, 5)  # the image, and one of each class (its own: itself again)
    assert len(queries) == 10 == len(np.unique(queries)) and queries.max() < len(y)
    assert _as_sets(own) == _as_sets(_every_class_left_out_reference(y, queries, 4))
    assert (10 * clf.search_score_) == pytest.approx(round(10 * clf.search_score_))
    monkeypatch.setattr(baselines, "MAX_HELD_OUT", 1000)
    TipAdapterClassifier(text_features=T, search="cv", random_state=0).fit(X, y)
    np.testing.assert_array_equal(drawn[-1], np.arange(len(y)))  # all shots when few
    assert _as_sets(seen[1]) == _as_sets(_every_class_left_out_reference(y, drawn[-1], 4))


@pytest.mark.parametrize("n_views", [1, 2])
def test_held_out_entries_leave_an_image_of_every_class_out(n_views):
    # Classes of one, two and five images, all shots or a subset held out: each image
    # leaves out its own rows and those of one image of every class of two or more.
    rng = np.random.RandomState(3)
    y_images = rng.permutation(np.repeat(np.arange(3), [1, 2, 5]))
    clf = TipAdapterClassifier(text_features=_unit(rng, (3, 5)), n_views=n_views).fit(
        rng.randn(len(y_images), 5 * n_views), y_images)
    for images in (np.arange(len(y_images)), np.array([0, 3, 6])):
        expected = [{i * n_views + view for i in row for view in range(n_views)}
                    for row in _every_class_left_out_reference(y_images, images, 3)]
        assert _as_sets(clf._held_out_entries(images)) == expected


def test_predict_runs_in_bounded_blocks(monkeypatch):
    X, y, T = _problem(per_class=12)  # a cache of 48 shots
    clf = TipAdapterClassifier(text_features=T, alpha=2.0, beta=3.0).fit(X, y)
    whole = clf.decision_function(X)
    blocks = []

    def recording(zero_shot, affinity, onehot, alpha, beta):
        blocks.append(affinity.shape)
        return tip_adapter_logits(zero_shot, affinity, onehot, alpha, beta)

    monkeypatch.setattr(baselines, "tip_adapter_logits", recording)
    monkeypatch.setattr(baselines, "_KERNEL_BLOCK", 100)  # 2 queries x 48 shots a block
    np.testing.assert_allclose(clf.decision_function(X), whole)
    assert blocks and all(rows * cache <= 100 for rows, cache in blocks)
    assert sum(rows for rows, _ in blocks) == len(X)


def test_predicting_one_row_does_not_scale_with_classes_times_shots():
    # 3000 classes x 2 shots: a dense one-hot cache matrix would be 144 MB a call.
    rng = np.random.RandomState(0)
    y = np.repeat(np.arange(3000), 2)
    X = rng.randn(len(y), 8)
    clf = TipAdapterClassifier(text_encoder=None).fit(X, y)
    tracemalloc.start()
    try:
        clf.predict(X[:1])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20e6


@pytest.mark.parametrize("param", ["alpha", "beta"])
def test_tip_adapter_weights_accept_zero_and_small_values_refuse_negative(param):
    X, y, T = _problem()
    for value in (0.0, 0.5):  # the boundary of the interval and a value inside [0, 1)
        TipAdapterClassifier(text_features=T, **{param: value}).fit(X, y)
    with pytest.raises(ValueError, match=param):
        TipAdapterClassifier(text_features=T, **{param: -0.1}).fit(X, y)


# --- Tip-Adapter-F: trained keys, chosen on validation folds ------------------------------


@pytest.mark.parametrize("block_entries", [2**22, 7])
def test_correct_counts_of_other_queries_match_the_dense_reference(block_entries):
    # Queries that are not cache items, and keys that are no longer unit (trained).
    rng = np.random.RandomState(2)
    n_classes = 5
    labels = np.repeat(np.arange(n_classes), 3)
    keys = 1.3 * _unit(rng, (15, 6))
    queries = _unit(rng, (11, 6))
    truth = rng.randint(n_classes, size=11)
    zs = 3 * queries @ _unit(rng, (n_classes, 6)).T
    candidates = random_candidates({"alpha": (0.0, 10.0), "beta": (0.1, 10.0)},
                                   {"alpha": 1.0, "beta": 5.5}, 30, rng, shared="beta")
    counts = correct_counts(zs, queries, keys, labels, truth, n_classes, candidates,
                            block_entries=block_entries)
    expected = [
        np.sum(np.argmax(tip_adapter_logits(zs, queries @ keys.T, one_hot(labels, n_classes),
                                            c["alpha"], c["beta"]), axis=1) == truth)
        for c in candidates
    ]
    np.testing.assert_array_equal(counts, expected)
    assert len(set(expected)) > 1


def test_tip_adapter_f_loss_is_the_cross_entropy_of_the_logits():
    import torch

    from sklearn_cmm._math.tip_adapter_loss import tip_adapter_f_loss

    rng = np.random.RandomState(0)
    labels = np.array([0, 1, 2, 0, 1, 2, 2])
    queries = _unit(rng, (7, 4))
    keys = queries + 0.1 * rng.randn(7, 4)
    zs = 5 * queries @ _unit(rng, (3, 4)).T
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    for own in (None, np.arange(7)):
        logits = tip_adapter_logits(zs, queries @ keys.T, one_hot(labels, 3), 2.0, 3.0,
                                    own_entries=own)
        expected = np.mean([np.log(np.exp(row).sum()) - row[c] for row, c in zip(logits, labels)])
        loss = tip_adapter_f_loss(
            t(zs), t(queries), t(keys), torch.tensor(labels), torch.tensor(labels), 2.0, 3.0,
            own_entries=None if own is None else torch.tensor(own),
        )
        assert float(loss) == pytest.approx(expected, rel=1e-12)
    keys_t = t(keys).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda k: tip_adapter_f_loss(t(zs), t(queries), k, torch.tensor(labels),
                                     torch.tensor(labels), 2.0, 3.0,
                                     own_entries=torch.arange(7)),
        (keys_t,),
    )


def _tip_f(T=None, **params):
    text = {"text_features": T} if T is not None else {"text_encoder": None}
    return TipAdapterClassifier(**text, train=True, random_state=0, **params)


def test_tip_adapter_f_starts_at_the_cache():
    # The first loss is that of the training-free cache, each shot without its own key.
    X, y, T = _problem(seed=2, per_class=8, noise=1.5)
    clf = _tip_f(T, logit_scale=10.0, learning_rate=1e-2).fit(X, y)
    free = TipAdapterClassifier(text_features=T, logit_scale=10.0).fit(X, y)
    logits = tip_adapter_logits(
        10 * free.cache_keys_ @ free.prototypes_.T, free.cache_keys_ @ free.cache_keys_.T,
        one_hot(y, 4), 1.0, 5.5, own_entries=np.arange(len(y)),
    )
    first = np.mean([np.log(np.exp(row).sum()) - row[c] for row, c in zip(logits, y)])
    assert clf.best_iter_ == clf.max_iter  # trained (the folds say it helps)
    assert clf.loss_curve_[0] == pytest.approx(first, rel=1e-5)
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert not np.allclose(clf.cache_keys_, free.cache_keys_)


@pytest.mark.parametrize("search", [None, "cv"])
def test_tip_adapter_f_that_does_not_help_is_the_training_free_fit(monkeypatch, search):
    # Trained keys no better on the folds: the fit is exactly the training-free one.
    X, y, T = _problem(seed=2, per_class=6)
    monkeypatch.setattr(TipAdapterClassifier, "_train_keys",
                        lambda self, keys, labels, prototypes: (keys, np.zeros(1)))
    params = dict(search=search, n_search_trials=20)
    clf = _tip_f(T, **params).fit(X, y)
    free = TipAdapterClassifier(text_features=T, random_state=0, **params).fit(X, y)
    assert clf.best_iter_ == 0 and clf.loss_curve_ is None
    assert clf.validation_scores_[0] == clf.validation_scores_[1]
    assert (clf.alpha_, clf.beta_, clf.search_score_) == (free.alpha_, free.beta_,
                                                          free.search_score_)
    np.testing.assert_array_equal(clf.decision_function(X), free.decision_function(X))
    np.testing.assert_array_equal(clf.predict_proba(X), free.predict_proba(X))


def test_tip_adapter_f_with_one_shot_a_class_is_the_training_free_fit():
    X, y, T = _problem(per_class=1)
    clf = _tip_f(T, search="cv", n_search_trials=10).fit(X, y)
    free = TipAdapterClassifier(text_features=T, search="cv", n_search_trials=10,
                                random_state=0).fit(X, y)
    assert clf.best_iter_ == 0 == clf.n_iter_ and clf.validation_scores_ is None
    np.testing.assert_array_equal(clf.predict_proba(X), free.predict_proba(X))


@pytest.mark.parametrize("text", [True, False])
def test_tip_adapter_f_validation_scores_are_the_folds_held_out_accuracies(text):
    # The untrained score is that of training-free fits on each fold's complement,
    # predicting the fold (text-free: the fold's own image means as prototypes).
    X, y, T = _problem(seed=5, per_class=6, noise=1.5)
    clf = _tip_f(T if text else None, max_iter=3, logit_scale=10.0).fit(X, y)
    folds = validation_folds(y, 4, np.random.RandomState(0), n_folds=baselines.N_VALIDATION_FOLDS)
    text_kw = {"text_features": T} if text else {"text_encoder": None}
    hits = 0
    for k in range(baselines.N_VALIDATION_FOLDS):
        free = TipAdapterClassifier(**text_kw, logit_scale=10.0).fit(X[folds != k], y[folds != k])
        hits += np.sum(free.predict(X[folds == k]) == y[folds == k])
    assert clf.validation_scores_[0] == pytest.approx(hits / len(y))


def test_tip_adapter_f_is_reproducible_and_learns():
    X, y, T = _problem(seed=2, per_class=8, noise=1.5)
    a = _tip_f(T, search="cv", n_search_trials=20, logit_scale=10.0, learning_rate=1e-2)
    a.fit(X, y)
    b = clone(a).fit(X, y)
    assert a.best_iter_ == a.max_iter  # training helps this problem on the folds
    assert a.validation_scores_[1] > a.validation_scores_[0]
    assert a.search_score_ == a.validation_scores_[1]
    np.testing.assert_array_equal(a.cache_keys_, b.cache_keys_)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.loss_curve_.shape == (a.max_iter,) and a.temperature_ > 0


def test_tip_adapter_f_divergence_raises_and_leaves_the_estimator_unfitted():
    X, y, T = _problem()
    clf = _tip_f(T, learning_rate=1e6, max_iter=30)
    with pytest.raises(ValueError, match="Tip-Adapter-F diverged"):
        clf.fit(X, y)
    assert not hasattr(clf, "cache_keys_") and not hasattr(clf, "classes_")


def test_four_validation_folds_share_every_class():
    y = np.repeat(np.arange(3), [8, 2, 1])
    fold = validation_folds(y, 3, np.random.RandomState(0), n_folds=4)
    assert [np.sum((y == 0) & (fold == k)) for k in range(4)] == [2, 2, 2, 2]
    assert sorted(fold[y == 1]) == [0, 1] and fold[y == 2] == [-1]


@pytest.mark.parametrize("params", [{"max_iter": 0}, {"learning_rate": 0.0}, {"train": "yes"},
                                    {"device": "tpu"}])
def test_tip_adapter_f_bad_parameters(params):
    X, y, T = _problem()
    with pytest.raises(ValueError):
        TipAdapterClassifier(text_features=T, **params).fit(X, y)
