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
