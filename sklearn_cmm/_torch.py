"""Torch as an implementation detail: device, dtype and the one training loop.

Every estimator goes through these helpers, so that arrays enter and leave as numpy, the
device is chosen in one place, and nothing touches torch's global random state.
"""

import numpy as np
import torch
from tqdm.auto import tqdm

from ._device import check_device

#: dtype of every tensor the estimators train with; results come back as float64 numpy.
TRAIN_DTYPE = torch.float32


def resolve_device(device="auto"):
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a ``torch.device``.

    ``"auto"`` picks the first GPU when CUDA is available, else the CPU. Asking for CUDA
    on a machine without it is an error rather than a silent fall back to the CPU.
    """
    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this machine; "
            "use device='auto' or device='cpu'."
        )
    return resolved


def as_tensor(array, device):
    """A copy of a numpy array as a ``TRAIN_DTYPE`` tensor on ``device``.

    Copying (rather than sharing memory) keeps read-only inputs, such as memory-mapped
    arrays, safe and silent.
    """
    return torch.tensor(np.asarray(array), dtype=TRAIN_DTYPE, device=device)


def as_numpy(tensor):
    """A tensor (any device) as a float64 numpy array, detached from the graph."""
    return tensor.detach().to(device="cpu", dtype=torch.float64).numpy()


def minimize_full_batch(
    params,
    loss_fn,
    *,
    max_iter,
    learning_rate,
    weight_decay=0.0,
    warmup_iter=0,
    warmup_start_lr=0.0,
    verbose=False,
    desc="training",
):
    """Minimise ``loss_fn()`` over ``params`` with full-batch AdamW.

    The learning rate rises linearly from ``warmup_start_lr`` to ``learning_rate`` over
    the first ``warmup_iter`` steps, then stays constant.

    Parameters
    ----------
    params : list of torch.Tensor
        Leaf tensors with ``requires_grad=True``; updated in place.
    loss_fn : callable
        Takes no argument and returns a scalar tensor.
    max_iter : int
        Number of optimisation steps (0 leaves ``params`` untouched).
    learning_rate, weight_decay : float
        AdamW's settings.
    warmup_iter : int, default=0
        Length of the linear warm-up.
    warmup_start_lr : float, default=0.0
        Learning rate at step 0 when ``warmup_iter > 0``.
    verbose : bool, default=False
        Show a tqdm progress bar.
    desc : str
        The bar's label.

    Returns
    -------
    losses : ndarray of shape (max_iter,)
        The loss before each step.
    """
    if max_iter == 0:
        return np.empty(0)
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    # Losses stay on the device until the end: one synchronisation instead of one a step.
    losses = []
    for step in tqdm(range(max_iter), desc=desc, disable=not verbose, leave=False):
        if step < warmup_iter:
            lr = warmup_start_lr + (learning_rate - warmup_start_lr) * step / warmup_iter
        else:
            lr = learning_rate
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return as_numpy(torch.stack(losses))
