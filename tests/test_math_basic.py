import numpy as np
import pytest

from sklearn_cmm._math.basic import (
    class_means,
    l2_normalize,
    loo_prototype_cosine,
    one_hot,
    view_rows,
)
from sklearn_cmm._math.search import held_out_subset, random_candidates, spread_subset
from sklearn_cmm._math.tip_adapter import tip_adapter_logits


def test_l2_normalize_rows_and_zero_rows():
    X = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalize(X), [[0.6, 0.8], [0.0, 0.0]])


def test_class_means_matches_loop():
    rng = np.random.RandomState(0)
    X, y = rng.randn(20, 3), rng.randint(0, 4, 20)
    y[:4] = np.arange(4)
    expected = np.array([X[y == k].mean(axis=0) for k in range(4)])
    np.testing.assert_allclose(class_means(X, y, 4), expected)


def test_one_hot():
    np.testing.assert_array_equal(one_hot(np.array([1, 0]), 3), [[0, 1, 0], [1, 0, 0]])


def _loo_reference(queries, items, y, n_classes, empty_class="zero", every_class=False,
                   n_choices=None):
    scores = np.zeros((len(y), n_classes))
    for i in range(len(y)):
        empty = []
        rank = sum(y[j] == y[i] for j in range(i))  # i is the rank-th item of its class
        choice = rank % (n_choices or max(1, len(y) // n_classes))
        for c in range(n_classes):
            members = [j for j in range(len(y)) if y[j] == c]
            if c == y[i]:
                members.remove(i)
            elif every_class and len(members) > 1:
                members.pop(choice % len(members))
            if not members:
                empty.append(c)
                continue  # an empty class scores 0
            proto = np.mean(items[members], axis=0)
            scores[i, c] = queries[i] @ proto / np.linalg.norm(proto)
        if empty_class == "mean":
            for c in empty:
                scores[i, c] = np.mean([scores[i, k] for k in range(n_classes) if k != c])
    return scores


@pytest.mark.parametrize("every_class", [False, True])
@pytest.mark.parametrize("empty_class", ["zero", "mean"])
@pytest.mark.parametrize("shots", [[1, 1, 1, 1], [3, 3, 3, 3], [1, 2, 1, 3], [1, 2, 2, 5]])
def test_loo_prototype_cosine_matches_loop(shots, empty_class, every_class):
    rng = np.random.RandomState(1)
    y = np.repeat(np.arange(4), shots)
    rng.shuffle(y)  # ranks within a class follow the order of the items
    queries = l2_normalize(rng.randn(len(y), 5))
    items = rng.randn(len(y), 5)
    np.testing.assert_allclose(
        loo_prototype_cosine(queries, items, y, 4, empty_class=empty_class,
                             every_class=every_class),
        _loo_reference(queries, items, y, 4, empty_class, every_class),
    )


def test_loo_prototype_cosine_every_class_is_leave_one_out_at_one_shot():
    # With one image a class only the query's own class can lose one.
    rng = np.random.RandomState(4)
    y = np.arange(4)
    queries, items = l2_normalize(rng.randn(4, 5)), rng.randn(4, 5)
    for empty_class in ("zero", "mean"):
        np.testing.assert_array_equal(
            loo_prototype_cosine(queries, items, y, 4, empty_class=empty_class, every_class=True),
            loo_prototype_cosine(queries, items, y, 4, empty_class=empty_class),
        )


@pytest.mark.parametrize("every_class", [False, True])
def test_loo_prototype_cosine_with_a_projection_averages_the_projected_items(every_class):
    rng = np.random.RandomState(5)
    y = np.repeat(np.arange(4), [3, 3, 1, 3])
    queries = l2_normalize(rng.randn(len(y), 5))
    tokens, M = rng.randn(len(y), 7), rng.randn(7, 5)
    index = np.array([0, 4, 6, 9])  # 4 queries of 4 classes: one choice of images left out
    np.testing.assert_allclose(
        loo_prototype_cosine(queries[index], tokens, y, 4, index, projection=M,
                             every_class=every_class),
        _loo_reference(queries, tokens @ M, y, 4, every_class=every_class, n_choices=1)[index],
    )


def test_view_rows_are_the_reshaped_layout():
    X = np.arange(4 * 3 * 2).reshape(4, 3 * 2)  # 4 images, 3 views of dimension 2
    rows = X.reshape(12, 2)
    for image in range(4):
        for view in range(3):
            np.testing.assert_array_equal(rows[view_rows([image], 3)[view]],
                                          X[image, 2 * view : 2 * view + 2])
    np.testing.assert_array_equal(view_rows([2, 0], 3), [6, 7, 8, 0, 1, 2])


@pytest.mark.parametrize("every_class", [False, True])
@pytest.mark.parametrize("shots", [1, 2, 3])
def test_loo_prototype_cosine_with_views_leaves_out_the_whole_image(shots, every_class):
    rng = np.random.RandomState(3)
    n_views, y_images = 3, np.repeat(np.arange(3), shots)
    y = np.repeat(y_images, n_views)
    items = rng.randn(len(y), 5)
    queries = l2_normalize(rng.randn(len(y_images), 5))
    index = np.arange(len(y_images))[::-1]
    expected = np.zeros((len(index), 3))
    for row, i in enumerate(index):  # the prototypes without image i (and one a class)
        rank = i % shots  # of len(index) // 3 = shots choices: the rank itself
        for c in range(3):
            images = [k for k in range(len(y_images)) if y_images[k] == c]
            if c == y_images[i]:
                images.remove(i)
            elif every_class and len(images) > 1:
                images.pop(rank % len(images))
            members = [j for j in range(len(y)) if j // n_views in images]
            if members:
                proto = items[members].mean(axis=0)
                expected[row, c] = queries[row] @ proto / np.linalg.norm(proto)
    np.testing.assert_allclose(
        loo_prototype_cosine(queries, items, y, 3, index, n_views=n_views,
                             every_class=every_class),
        expected,
    )


def test_tip_adapter_logits_matches_loop():
    rng = np.random.RandomState(2)
    zs, A = rng.randn(6, 3), rng.uniform(-1, 1, (6, 6))
    labels = rng.randint(0, 3, 6)
    expected = zs.copy()
    expected_loo = zs.copy()
    for i in range(6):
        for j in range(6):
            term = 0.7 * np.exp(-2.0 * (1 - A[i, j]))
            expected[i, labels[j]] += term
            if i != j:
                expected_loo[i, labels[j]] += term
    onehot = one_hot(labels, 3)
    np.testing.assert_allclose(tip_adapter_logits(zs, A, onehot, 0.7, 2.0), expected)
    np.testing.assert_allclose(
        tip_adapter_logits(zs, A, onehot, 0.7, 2.0, own_entries=np.arange(6)), expected_loo
    )
    # A subset of the cache as queries: each leaves out its own entry only.
    np.testing.assert_allclose(
        tip_adapter_logits(zs[[4, 1]], A[[4, 1]], onehot, 0.7, 2.0, own_entries=np.array([4, 1])),
        expected_loo[[4, 1]],
    )
    # Images of two views (entries 2i, 2i + 1): a query leaves out both.
    own = np.array([[4, 5], [0, 1]])
    expected_views = zs[[4, 0]].copy()
    for row, i in enumerate([4, 0]):
        for j in range(6):
            if j not in own[row]:
                expected_views[row, labels[j]] += 0.7 * np.exp(-2.0 * (1 - A[i, j]))
    np.testing.assert_allclose(
        tip_adapter_logits(zs[[4, 0]], A[[4, 0]], onehot, 0.7, 2.0, own_entries=own),
        expected_views,
    )


def test_random_candidates_defaults_first_and_in_bounds():
    cands = random_candidates({"a": (0.0, 2.0), "b": (5.0, 6.0)}, {"a": 9.0, "b": 9.0}, 50, 0)
    assert cands[0] == {"a": 9.0, "b": 9.0}
    assert len(cands) == 50
    assert all(0 <= c["a"] <= 2 and 5 <= c["b"] <= 6 for c in cands[1:])
    assert cands == random_candidates(
        {"a": (0.0, 2.0), "b": (5.0, 6.0)}, {"a": 9.0, "b": 9.0}, 50, 0
    )


def test_held_out_subset_all_when_few_else_a_reproducible_sorted_draw():
    rng = np.random.RandomState(0)
    np.testing.assert_array_equal(held_out_subset(10, rng, 10), np.arange(10))
    assert rng.randint(1000) == np.random.RandomState(0).randint(1000)  # nothing drawn
    index = held_out_subset(50, np.random.RandomState(3), 10)
    assert len(np.unique(index)) == 10 and np.all(np.diff(index) > 0) and index.max() < 50
    np.testing.assert_array_equal(index, held_out_subset(50, np.random.RandomState(3), 10))


def _spread_subset_loop(y, max_size):
    """Reference: walk the samples class by class, keeping every (n / max_size)-th."""
    order = [i for c in sorted(set(y)) for i in range(len(y)) if y[i] == c]
    if len(y) <= max_size:
        return list(range(len(y)))
    return sorted(order[(k * len(y)) // max_size] for k in range(max_size))


@pytest.mark.parametrize("n_samples, max_size", [(7, 7), (7, 8), (8, 7), (50, 10), (53, 12)])
def test_spread_subset_matches_loop_and_keeps_class_shares(n_samples, max_size):
    y = np.random.RandomState(n_samples).randint(4, size=n_samples)
    index = spread_subset(y, max_size)
    np.testing.assert_array_equal(index, _spread_subset_loop(list(y), max_size))
    assert len(np.unique(index)) == len(index) == min(n_samples, max_size)
    kept = np.bincount(y[index], minlength=4)
    share = np.bincount(y, minlength=4) * len(index) / n_samples
    assert np.all(np.abs(kept - share) <= 1)


@pytest.mark.parametrize("dtype, scale", [(np.float64, 1e200), (np.float32, 1e30), (np.float64, 1e-200)])
def test_l2_normalize_neither_overflows_nor_underflows(dtype, scale):
    X = np.array([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]])
    out = l2_normalize((X * scale).astype(dtype))
    assert out.dtype == dtype and np.all(np.isfinite(out))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_l2_normalize_leaves_its_input_unchanged(dtype):
    X = np.random.RandomState(1).randn(4, 3).astype(dtype)
    before = X.copy()
    out = l2_normalize(X)
    np.testing.assert_array_equal(X, before)
    assert not np.shares_memory(out, X)


def test_l2_normalize_converts_in_its_division():
    X = (100 * np.random.RandomState(2).randn(6, 5)).astype(np.float32)
    X[3] = 0
    before = X.copy()
    out = l2_normalize(X, dtype=np.float64)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, l2_normalize(X.astype(np.float64)))  # bitwise
    np.testing.assert_array_equal(X, before)
    assert l2_normalize(np.array([[3, 4]])).dtype == np.float64  # integers: float64


def test_l2_normalize_matches_the_plain_formula():
    X = np.random.RandomState(0).randn(5, 7)
    np.testing.assert_allclose(l2_normalize(X), X / np.sqrt((X**2).sum(axis=1, keepdims=True)))
    np.testing.assert_allclose(l2_normalize(X, axis=0), X / np.sqrt((X**2).sum(axis=0, keepdims=True)))


def test_loo_prototype_cosine_of_a_class_with_a_single_item_is_zero():
    # A shot alone in its class has no prototype left once it is left out: score 0, and
    # the other classes' scores are untouched.
    X = l2_normalize(np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]))
    y = np.array([0, 0, 1])
    scores = loo_prototype_cosine(X, X, y, 2)
    assert scores[2, 1] == 0.0
    np.testing.assert_allclose(scores[2, 0], X[2] @ l2_normalize(X[:2].sum(axis=0)))
    np.testing.assert_allclose(scores[0, 0], X[0] @ X[1])


def test_loo_prototype_cosine_rejects_an_unknown_empty_class_score():
    X = l2_normalize(np.eye(2))
    with pytest.raises(ValueError, match="empty_class"):
        loo_prototype_cosine(X, X, np.array([0, 1]), 2, empty_class="nan")
