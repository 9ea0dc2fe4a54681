"""Row normalisation in torch with its gradient by hand, for the hand-written losses."""

import torch

#: ``torch.nn.functional.normalize``'s floor on a norm.
NORM_EPS = 1e-12


def unit_rows(x):
    """``normalize(x, dim=1)`` and the floored row norms, for :func:`unit_rows_grad`."""
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min_(NORM_EPS)
    return x / norm, norm


def unit_rows_grad(unit, norm, grad):
    """Gradient through ``unit = x / ||x||`` (rows), given that of ``unit`` (overwritten).

    ``(grad - unit (unit . grad)) / ||x||``: autograd's gradient of
    ``normalize(x, dim=1)`` wherever no row norm is below its floor ``NORM_EPS`` (a row
    of norm 1e-12 does not occur in a map or bridge that classifies anything).
    """
    radial = (unit * grad).sum(dim=1, keepdim=True)
    return grad.addcmul_(unit, radial, value=-1.0).div_(norm)
