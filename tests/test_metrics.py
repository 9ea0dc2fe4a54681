import numpy as np
import pytest

from sklearn_cmm import modality_gap
from sklearn_cmm.metrics import paired_alignment


def test_modality_gap_matches_definition():
    rng = np.random.RandomState(0)
    images, texts = rng.randn(30, 8) + 2, rng.randn(5, 8) - 1
    centroid_i = np.mean([v / np.linalg.norm(v) for v in images], axis=0)
    centroid_t = np.mean([v / np.linalg.norm(v) for v in texts], axis=0)
    assert modality_gap(images, texts) == pytest.approx(np.linalg.norm(centroid_i - centroid_t))


def test_modality_gap_zero_for_same_distribution_and_scale_free():
    X = np.random.RandomState(1).randn(10, 4)
    assert modality_gap(X, 3 * X) == pytest.approx(0.0, abs=1e-12)


def test_modality_gap_dimension_mismatch():
    with pytest.raises(ValueError, match="dims"):
        modality_gap(np.ones((2, 3)), np.ones((2, 4)))


def test_paired_alignment():
    rng = np.random.RandomState(2)
    X, T = rng.randn(7, 3), rng.randn(7, 3)
    expected = np.mean([x @ t / np.linalg.norm(x) / np.linalg.norm(t) for x, t in zip(X, T)])
    assert paired_alignment(X, T) == pytest.approx(expected)
    with pytest.raises(ValueError, match="same shape"):
        paired_alignment(X, T[:3])


def test_expected_calibration_error_maps_labels_to_columns():
    from sklearn_cmm._math.calibration import expected_calibration_error as ece_of_indices
    from sklearn_cmm.metrics import expected_calibration_error

    rng = np.random.RandomState(3)
    proba = rng.dirichlet(np.ones(3), size=40)
    y_index = rng.randint(3, size=40)
    labels = np.array(["z", "a", "m"])  # columns in classes_ order, not sorted
    expected = ece_of_indices(y_index, proba, n_bins=10)
    assert expected_calibration_error(labels[y_index], proba, labels=labels, n_bins=10) == (
        pytest.approx(expected)
    )
    y_full = np.arange(40) % 3
    assert expected_calibration_error(y_full, proba) == pytest.approx(ece_of_indices(y_full, proba))


def test_expected_calibration_error_rejects_unknown_labels_and_columns():
    from sklearn_cmm.metrics import expected_calibration_error

    with pytest.raises(ValueError, match="not in labels"):
        expected_calibration_error([0, 5], [[0.5, 0.5], [0.2, 0.8]], labels=[0, 1])
    with pytest.raises(ValueError, match="labels=clf.classes_"):
        expected_calibration_error([0, 0], [[0.5, 0.5], [0.2, 0.8]])
