"""Torch as an implementation detail: device, dtype and the training loops (AdamW, L-BFGS).

Every estimator goes through these helpers, so that arrays enter and leave as numpy, the
device is chosen in one place, and nothing touches torch's global random state. A
training whose gradient is written by hand runs on :class:`ArrayBackend`: numpy arrays
on the CPU, torch tensors on a GPU.
"""

import math
from contextlib import contextmanager

import numpy as np
import torch
from tqdm.auto import tqdm

from ._device import check_device
from ._threads import single_torch_thread, sync_torch_threads

#: dtype of every tensor the estimators train with; results come back as float64 numpy.
TRAIN_DTYPE = torch.float32
#: The same dtype for the trainings on numpy arrays (:class:`ArrayBackend`).
_NUMPY_TRAIN_DTYPE = torch.empty(0, dtype=TRAIN_DTYPE).numpy().dtype


def resolve_device(device="auto"):
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a ``torch.device``.

    ``"auto"`` picks the first GPU when CUDA is available, else the CPU. Asking for CUDA
    on a machine without it is an error rather than a silent fall back to the CPU.
    """
    check_device(device)
    sync_torch_threads()  # a call sized its threads before it knew it would need torch
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


class ArrayBackend:
    """Where a training with a hand-written gradient keeps its arrays.

    numpy on the CPU, torch on a GPU. At few-shot sizes a step is dozens of operations on
    arrays of a few thousand entries, and their fixed cost decides its time: about a
    microsecond a numpy operation on a CPU core, two to five for torch's dispatch. A
    SeMoBridge-T step (loss, gradient and AdamW) at 10 classes x 16 shots x 64-d takes
    about 195 microseconds on numpy arrays against 305 on torch's (one core); at the
    largest sizes both spend their time in the same BLAS products. On a GPU torch's
    kernels do the work.

    Parameters
    ----------
    device : torch.device
        The training's device (:func:`resolve_device`).
    xp : {numpy, torch} or None, default=None
        The array library; None: numpy on the CPU, torch elsewhere (torch on the CPU
        serves the tests that compare the two).

    Attributes
    ----------
    xp : module
        ``numpy`` or ``torch``.
    """

    def __init__(self, device, xp=None):
        self.device = device
        self.xp = xp if xp is not None else np if device.type == "cpu" else torch

    def asarray(self, array):
        """A ``TRAIN_DTYPE`` copy of a numpy array, in the backend's arrays."""
        if self.xp is np:
            return np.array(array, dtype=_NUMPY_TRAIN_DTYPE)
        return as_tensor(array, self.device)

    def asindices(self, array):
        """An integer numpy array as the backend's index array."""
        if self.xp is np:
            return np.asarray(array, dtype=np.intp)
        return torch.as_tensor(array, dtype=torch.long, device=self.device)


def stack_to_numpy(scalars):
    """Scalars of numpy or of torch (the losses of a training) as one float64 numpy array.

    One synchronisation with the device for all of them, not one a step.
    """
    if isinstance(scalars[0], torch.Tensor):
        return as_numpy(torch.stack(scalars))
    return np.array(scalars, dtype=np.float64)


def to_numpy(array):
    """A numpy array or a tensor (any device) as a float64 numpy array."""
    if isinstance(array, np.ndarray):
        return array.astype(np.float64)
    return as_numpy(array)


class FullBatchAdamW:
    """torch's AdamW update of fixed arrays, stepped with the gradients it is given.

    The update is torch's own fused kernel (``torch._fused_adamw_``, one kernel for every
    array, on the CPU and CUDA), called as ``torch.optim.AdamW(params, fused=True)`` calls
    it, so the arrays follow that optimiser exactly. The layers around the kernel are left
    out: at few-shot sizes the ``Optimizer`` object's ``step`` (hooks, state look-ups,
    bookkeeping) cost about 110 microseconds a step on a CPU core, and the functional
    :func:`torch.optim.adamw.adamw` (grouping by device, checks) 13 of its 17
    microseconds. numpy arrays (:class:`ArrayBackend` on the CPU) are updated in place
    through tensors that share their memory: one pass over them, where numpy's own
    operations would take a dozen (3x the time at 522 x 512).

    Parameters
    ----------
    params : list of torch.Tensor or list of ndarray
        The arrays, all on one device and of one dtype, updated in place (leaves that
        require a gradient are fine).
    weight_decay : float
        Decoupled weight decay.
    """

    def __init__(self, params, *, weight_decay):
        # Detached, on the same memory: updated in place without torch.no_grad() where the
        # leaves require a gradient (its context costs 1.9 microseconds, the kernel 4.7 at
        # 74 x 64 on a CPU core).
        self.params = [_as_shared_tensor(p).detach() for p in params]
        self.weight_decay = float(weight_decay)
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]
        # The fused kernel reads each array's step count from a float32 tensor on the
        # device. The arrays step together, so they share one, set from a Python count
        # (fill_: 0.9 microseconds against torch._foreach_add_'s 2.8). The update took
        # 9.7 microseconds with both, 5.6 without.
        self.n_steps = 0
        self.steps = [torch.zeros((), dtype=torch.float32, device=self.params[0].device)]
        self.steps *= len(self.params)

    def step(self, grads, lr):
        """One update at learning rate ``lr``; ``grads`` pair with ``params``."""
        self.n_steps += 1
        self.steps[0].fill_(self.n_steps)
        torch._fused_adamw_(
            self.params, [_as_shared_tensor(g) for g in grads], self.exp_avgs,
            self.exp_avg_sqs, [], self.steps, amsgrad=False, lr=lr, beta1=0.9, beta2=0.999,
            weight_decay=self.weight_decay, eps=1e-8, maximize=False)


def _as_shared_tensor(array):
    """A tensor as it is, a numpy array as a tensor on its memory."""
    return torch.from_numpy(array) if isinstance(array, np.ndarray) else array


def autograd_value_and_grad(param, loss_fn):
    """A loss written for autograd as the ``value_and_grad`` the minimisers take.

    Parameters
    ----------
    param : torch.Tensor
        A leaf tensor with ``requires_grad=True``.
    loss_fn : callable
        Takes no argument and returns a scalar tensor of ``param``.

    Returns
    -------
    value_and_grad : callable
        Takes no argument; returns the loss (detached) and its gradient.
    """

    def value_and_grad():
        param.grad = None
        loss = loss_fn()
        loss.backward()
        return loss.detach(), param.grad

    return value_and_grad


@contextmanager
def training_arrays(param):
    """The block trains ``param``: on a numpy array, torch's kernels (AdamW's) run on
    one thread beside numpy's BLAS threads
    (:func:`~sklearn_cmm._threads.single_torch_thread`), and numpy's overflow warnings
    are off (a run that diverges raises at its end, :func:`check_converging`)."""
    if not isinstance(param, np.ndarray):
        yield
        return
    with single_torch_thread(), np.errstate(over="ignore", invalid="ignore"):
        yield


def minimize_full_batch(
    param,
    value_and_grad,
    *,
    max_iter,
    learning_rate,
    weight_decay=0.0,
    warmup_iter=0,
    warmup_start_lr=0.0,
    schedule="constant",
    verbose=False,
    desc="training",
):
    """Minimise a loss over ``param`` with full-batch AdamW.

    The learning rate rises linearly from ``warmup_start_lr`` to ``learning_rate`` over
    the first ``warmup_iter`` steps, then stays constant or, with ``schedule="cosine"``,
    follows a cosine from ``learning_rate`` down toward 0 over the remaining steps
    (``learning_rate * (1 + cos(pi * t / n)) / 2`` at step ``t`` of ``n``, as torch's
    ``CosineAnnealingLR`` with ``T_max = n``).

    Parameters
    ----------
    param : torch.Tensor or ndarray
        The array, updated in place (:class:`FullBatchAdamW`).
    value_and_grad : callable
        Takes no argument and returns the loss (a scalar array) and its gradient (an
        array of ``param``'s shape) at ``param``'s current value: a hand-written
        gradient, or :func:`autograd_value_and_grad`.
    max_iter : int
        Number of optimisation steps (0 leaves ``param`` untouched).
    learning_rate, weight_decay : float
        AdamW's settings.
    warmup_iter : int, default=0
        Length of the linear warm-up.
    warmup_start_lr : float, default=0.0
        Learning rate at step 0 when ``warmup_iter > 0``.
    schedule : {"constant", "cosine"}, default="constant"
        The learning rate after the warm-up.
    verbose : bool, default=False
        Show a tqdm progress bar.
    desc : str
        The bar's label.

    Returns
    -------
    losses : ndarray of shape (max_iter,)
        The loss before each step.

    Raises
    ------
    ValueError
        If the loss or the parameters became NaN or infinite (the run diverged).
    """
    if max_iter == 0:
        return np.empty(0)
    optimizer = FullBatchAdamW([param], weight_decay=weight_decay)
    # Losses stay on the device until the end: one synchronisation instead of one a step.
    losses = []
    with training_arrays(param):
        for step in tqdm(range(max_iter), desc=desc, disable=not verbose, leave=False):
            if step < warmup_iter:
                lr = warmup_start_lr + (learning_rate - warmup_start_lr) * step / warmup_iter
            elif schedule == "cosine":
                progress = (step - warmup_iter) / (max_iter - warmup_iter)
                lr = learning_rate * (1.0 + math.cos(math.pi * progress)) / 2.0
            else:
                lr = learning_rate
            loss, grad = value_and_grad()
            optimizer.step([grad], lr)
            losses.append(loss)
    losses = stack_to_numpy(losses)
    check_converging(losses, [param], desc)
    return losses


def minimize_lbfgs(param, value_and_grad, *, max_iter, tol, entries=None, verbose=False,
                   desc="training"):
    """Minimise a loss over ``param`` with full-batch L-BFGS (strong Wolfe line search).

    :func:`sklearn_cmm._math.lbfgs.lbfgs` (history 10), on numpy arrays or tensors. Stops
    after ``max_iter`` iterations or ``1.25 max_iter`` loss evaluations after the start's,
    whichever comes first, or when the largest entry of a step or of the gradient is at
    most ``tol``.

    Parameters
    ----------
    param : ndarray or torch.Tensor
        The array (contiguous), updated in place.
    value_and_grad : callable
        As :func:`minimize_full_batch`'s.
    max_iter : int
        Most iterations.
    tol : float
        The tolerances above.
    entries : callable or None, default=None
        What the tolerances measure, as :func:`~sklearn_cmm._math.lbfgs.lbfgs`'s (it is
        given flat arrays).
    verbose : bool, default=False
        Show a tqdm progress bar.
    desc : str
        The bar's label.

    Returns
    -------
    losses : ndarray of shape (n_evaluations,)
        The loss at each evaluation (the first is the loss at the start).
    n_iter : int
        Iterations taken.
    """
    from ._math.lbfgs import lbfgs

    # the start's evaluation is not one of the iterations': counted in, it left max_iter=1
    # no evaluation for its line search (the start returned, as max_iter=0)
    bar = tqdm(total=1 + max(max_iter, int(1.25 * max_iter)), desc=desc,
               disable=not verbose, leave=False)

    def flat_value_and_grad():
        loss, grad = value_and_grad()
        bar.update()
        return loss, grad.reshape(-1)

    with training_arrays(param):
        losses, n_iter = lbfgs(param.reshape(-1), flat_value_and_grad, max_iter=max_iter,
                               max_eval=bar.total, tol=tol, entries=entries)
    bar.close()
    losses = np.array(losses)
    # A line search rejects a try whose loss is NaN or +inf as a step too long: after the
    # start, those were never the parameters' loss
    rejected = np.zeros(len(losses), dtype=bool)
    rejected[1:] = np.isnan(losses[1:]) | (losses[1:] == np.inf)
    check_converging(losses[~rejected], [param], desc, remedy="Check X for huge values")
    return losses, n_iter


def check_converging(losses, params, desc,
                     remedy="Lower learning_rate, or check X for huge values"):
    """Raise when a run diverged: a fitted model must never hold NaN parameters.

    Checked once at the end (one synchronisation with the device, not one a step).
    """
    finite = np.isfinite(losses)
    if finite.all() and all(np.isfinite(to_numpy(p)).all() for p in params):
        return
    step = int(np.argmin(finite)) if not finite.all() else len(losses)
    raise ValueError(
        f"{desc} diverged: the loss or the parameters became NaN or infinite (at step "
        f"{step} of {len(losses)}). {remedy}; the estimator was not fitted."
    )
