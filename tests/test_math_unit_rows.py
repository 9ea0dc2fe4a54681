"""Row normalisation and its gradient, on numpy arrays and torch tensors alike."""

import math

import numpy as np
import pytest
import torch

from sklearn_cmm._math.unit_rows import NORM_EPS, row_dots, take_rows, unit_rows, unit_rows_grad

KINDS = {"numpy": np.asarray, "torch": torch.as_tensor}


@pytest.fixture
def rows():
    x = np.random.default_rng(0).standard_normal((4, 3))
    x[2] = 0.0  # a zero row: its norm is floored, its unit row stays 0
    return x


@pytest.mark.parametrize("kind", KINDS)
def test_unit_rows_and_row_dots_match_loops(rows, kind):
    unit, norm = unit_rows(KINDS[kind](rows.copy()))
    dots = row_dots(KINDS[kind](rows), KINDS[kind](2 * rows))
    for i, row in enumerate(rows):
        length = math.sqrt(sum(v * v for v in row))
        assert float(norm[i, 0]) == pytest.approx(max(length, NORM_EPS), rel=1e-12)
        assert np.asarray(unit[i]) == pytest.approx(row / max(length, NORM_EPS), abs=1e-12)
        assert float(dots[i]) == pytest.approx(2 * length**2, rel=1e-12)
    assert float(norm[2, 0]) == NORM_EPS and not np.asarray(unit[2]).any()
    out = KINDS[kind](np.full_like(rows, np.nan))
    into, norm_again = unit_rows(KINDS[kind](rows.copy()), out=out)
    assert into is out
    np.testing.assert_array_equal(np.asarray(out), np.asarray(unit))
    np.testing.assert_array_equal(np.asarray(norm_again), np.asarray(norm))


@pytest.mark.parametrize("kind", KINDS)
def test_unit_rows_grad_is_autograds_through_normalize(rows, kind):
    rows = rows[[0, 1, 3]]  # away from the floor, where the formula is the gradient
    upstream = np.random.default_rng(1).standard_normal(rows.shape)
    x = torch.tensor(rows, requires_grad=True)
    torch.nn.functional.normalize(x, dim=1).backward(torch.tensor(upstream))
    unit, norm = unit_rows(KINDS[kind](rows.copy()))
    grad = KINDS[kind](upstream.copy())
    got = unit_rows_grad(unit, norm, grad)
    np.testing.assert_allclose(np.asarray(got), x.grad.numpy(), rtol=1e-12, atol=1e-14)
    assert got is grad  # written in place


@pytest.mark.parametrize("kind", KINDS)
def test_take_rows_gathers_rows_in_index_order(rows, kind):
    index = np.array([3, 0, 3, 1])  # repeated and unordered
    got = take_rows(KINDS[kind](rows), KINDS[kind](index))
    np.testing.assert_array_equal(np.asarray(got), np.array([rows[i] for i in index]))
