"""Row normalisation with its gradient by hand, and row gathers, for the hand-written
losses.

On numpy arrays or torch tensors alike: each function takes the cheapest operations of
the array's own library (a numpy operation costs about a microsecond on a CPU, a torch
one two to five, so the count matters more than the arithmetic at few-shot sizes).
"""

import numpy as np
import torch

#: ``torch.nn.functional.normalize``'s floor on a norm.
NORM_EPS = 1e-12


def row_dots(a, b):
    """The dot product of each row of ``a`` with the same row of ``b``."""
    if isinstance(a, np.ndarray):
        return np.vecdot(a, b)  # the ufunc itself: np.linalg.vecdot adds 0.3 us a call
    return torch.linalg.vecdot(a, b)


def take_rows(a, index):
    """``a[index]``: the rows of ``a`` at the integers ``index`` (an index of the array's
    library, as ``ArrayBackend.asindices`` makes)."""
    if isinstance(a, np.ndarray):
        return a.take(index, axis=0)  # a third of the cost of a[index] at few-shot sizes
    return a.index_select(0, index)


def unit_rows(x, out=None):
    """``normalize(x, dim=1)`` and the floored row norms, for :func:`unit_rows_grad`.

    The unit rows go to ``out`` when it is given (an array of the shape of ``x``).
    """
    if isinstance(x, np.ndarray):
        norm = np.sqrt(row_dots(x, x))[:, None]
        np.maximum(norm, NORM_EPS, out=norm)
        return np.divide(x, norm, out=out), norm
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min_(NORM_EPS)
    return torch.div(x, norm, out=out), norm


def unit_rows_grad(unit, norm, grad):
    """Gradient through ``unit = x / ||x||`` (rows), given that of ``unit`` (overwritten).

    ``(grad - unit (unit . grad)) / ||x||``: autograd's gradient of
    ``normalize(x, dim=1)`` wherever no row norm is below its floor ``NORM_EPS`` (a row
    of norm 1e-12 does not occur in a map or bridge that classifies anything).
    """
    if isinstance(unit, np.ndarray):
        grad -= unit * row_dots(unit, grad)[:, None]
        grad /= norm
        return grad
    radial = (unit * grad).sum(dim=1, keepdim=True)
    return grad.addcmul_(unit, radial, value=-1.0).div_(norm)
