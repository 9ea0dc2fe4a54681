import numpy as np
import pytest
from sklearn.model_selection import cross_val_score

from sklearn_cmm import ZeroShotClassifier
from sklearn_cmm.model_selection import FewShotSplit, draw_shots


def test_draw_shots_counts_disjoint_reproducible():
    y = np.repeat(["a", "b", "c"], [5, 7, 9])
    shots, rest = draw_shots(y, 3, random_state=0)
    assert sorted(np.unique(y[shots], return_counts=True)[1]) == [3, 3, 3]
    assert np.intersect1d(shots, rest).size == 0 and len(shots) + len(rest) == len(y)
    np.testing.assert_array_equal(shots, draw_shots(y, 3, random_state=0)[0])
    assert not np.array_equal(shots, draw_shots(y, 3, random_state=1)[0])


def test_draw_shots_too_few_samples():
    with pytest.raises(ValueError, match="fewer samples"):
        draw_shots(np.array([0, 0, 1]), 2)


def test_split_is_stratified_reproducible_and_disjoint():
    y = np.repeat(np.arange(4), 10)
    cv = FewShotSplit(n_shots=3, n_splits=4, random_state=0)
    splits = list(cv.split(np.zeros((40, 2)), y))
    assert len(splits) == cv.get_n_splits() == 4
    for train, test in splits:
        assert np.bincount(y[train]).tolist() == [3, 3, 3, 3]
        assert np.intersect1d(train, test).size == 0 and len(test) == 28
    again = list(cv.split(np.zeros((40, 2)), y))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(splits, again))
    assert len({tuple(train) for train, _ in splits}) > 1


@pytest.mark.parametrize("test_size, per_class", [(0.5, 4), (2, 2)])
def test_test_size(test_size, per_class):
    y = np.repeat(np.arange(3), 10)
    cv = FewShotSplit(n_shots=2, n_splits=2, test_size=test_size, random_state=0)
    for train, test in cv.split(np.zeros((30, 1)), y):
        assert np.bincount(y[test]).tolist() == [per_class] * 3
        assert np.intersect1d(train, test).size == 0


def test_invalid_parameters_and_inputs():
    with pytest.raises(ValueError):
        FewShotSplit(n_shots=0)
    with pytest.raises(ValueError, match="samples"):
        next(FewShotSplit(2).split(np.zeros((3, 1)), [0, 1]))


def test_works_with_cross_val_score():
    rng = np.random.RandomState(0)
    y = np.repeat(np.arange(3), 8)
    X = np.eye(3, 5)[y] + 0.1 * rng.randn(24, 5)
    scores = cross_val_score(
        ZeroShotClassifier(text_encoder=None), X, y, cv=FewShotSplit(2, 3, random_state=0)
    )
    assert scores.shape == (3,) and np.all(scores > 0.5)


def test_draw_shots_takes_a_class_with_exactly_n_shots():
    y = np.repeat([0, 1], [3, 5])
    shots, rest = draw_shots(y, 3, random_state=0)
    np.testing.assert_array_equal(shots[y[shots] == 0], [0, 1, 2])
    assert np.bincount(y[shots]).tolist() == [3, 3] and set(y[rest]) == {1}


def test_split_refuses_a_class_left_with_nothing_to_test():
    y = np.repeat(["a", "b", "c", "d"], [2, 5, 2, 1])
    # every class too small at once: those with exactly n_shots and those with fewer
    with pytest.raises(ValueError, match=r"\['a', 'c', 'd'\] have only \[2, 2, 1\] samples"):
        next(FewShotSplit(2).split(np.zeros((10, 1)), y))
    next(FewShotSplit(1).split(np.zeros((9, 1)), y[:9]))  # one sample left for each class


def test_split_all_classes_exactly_n_shots_is_an_error_not_nan():
    y = np.repeat([0, 1], 2)
    X = np.eye(2, 3)[y]
    with pytest.raises(ValueError, match="have only \\[2, 2\\] samples"):
        cross_val_score(ZeroShotClassifier(text_encoder=None), X, y, cv=FewShotSplit(2, 1))


def test_empty_or_continuous_y_is_a_clear_error():
    for draw in (lambda y: draw_shots(y, 1), lambda y: next(FewShotSplit(1).split(y, y))):
        with pytest.raises(ValueError, match="y is empty"):
            draw(np.array([]))
        with pytest.raises(ValueError, match="Unknown label type: continuous"):
            draw(np.random.RandomState(0).rand(4))


def test_split_takes_sparse_x():
    from scipy.sparse import csr_matrix

    y = np.repeat([0, 1], 3)
    train, test = next(FewShotSplit(1, random_state=0).split(csr_matrix(np.eye(6)), y))
    assert len(train) == 2 and len(test) == 4


@pytest.mark.parametrize("name, value", [("n_shots", 0), ("n_shots", -1), ("n_splits", 0),
                                         ("test_size", 1.5)])
def test_split_checks_parameters_set_after_construction(name, value):
    cv = FewShotSplit(1)
    setattr(cv, name, value)
    with pytest.raises(ValueError, match=name):
        next(cv.split(np.zeros((6, 1)), np.repeat([0, 1], 3)))


def test_two_d_y_is_a_clear_error():
    y = np.repeat([0, 1], 3).reshape(3, 2)
    with pytest.raises(ValueError, match=r"1d array.*\(3, 2\)"):
        next(FewShotSplit(1).split(np.zeros((3, 1)), y))
    with pytest.raises(ValueError, match=r"1d array.*\(3, 2\)"):
        draw_shots(y, 1)


def test_draw_shots_checks_n_shots():
    with pytest.raises(ValueError, match="n_shots"):
        draw_shots([0, 0, 1, 1], 0)
