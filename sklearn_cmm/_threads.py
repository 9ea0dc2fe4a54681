"""CPU threads sized to the work, set for the duration of a call and restored after it.

The few-shot problems most users have are small (tens of classes, a few shots, products
of a few hundred rows by a few hundred columns): there a second thread saves nothing,
and on a busy machine OpenMP and BLAS threads that wait for a core spin and make a fit
many times slower. Large products (ImageNet: 16,000 x 1024 x 1024 multiply-adds) do gain
from every core. :func:`sized_threads` chooses the count from the size of the largest
product of the call (:func:`threads_for`), or takes the user's ``n_jobs``, and sets
torch's intra-op threads (when torch is loaded) and the BLAS libraries' threads (through
threadpoolctl) until the call returns, whether it returns or raises.

This module does not import torch: a closed-form fit limits the BLAS threads only, and
torch's threads are set as soon as a torch path of the call resolves its device
(:func:`sync_torch_threads`).
"""

import os
import sys
import threading
from contextlib import contextmanager

#: Multiply-adds of a call's largest product per thread: a product below twice this runs
#: on one thread, one of ``k`` times this on ``k`` threads (at most every core). About
#: 30 ms of one CPU core; see the user guide (Speed) for the measurements behind it.
WORK_PER_THREAD = 1e9

_lock = threading.Lock()
# The thread counts asked for by the calls in progress, oldest first (calls from several
# threads, or nested calls, share the process-wide settings: the latest request holds,
# and the values found by the first are restored when the last one ends).
_requests = []
_saved = {}  # "blas": threadpoolctl's restore handle; "torch": torch's thread count
_controller = None


def available_cores():
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_for(work, n_jobs=None):
    """Threads for a call whose largest product has ``work`` multiply-adds.

    Parameters
    ----------
    work : float
        Multiply-adds of the largest matrix product of the call.
    n_jobs : int or None, default=None
        The user's setting, with joblib's meaning: a positive count, ``-1`` for every
        core, ``-2`` for all but one, and so on. None sizes the count from ``work``:
        ``work // WORK_PER_THREAD`` threads, at least 1 and at most every core.

    Returns
    -------
    n_threads : int
    """
    cores = available_cores()
    if n_jobs is None:
        return int(min(max(work // WORK_PER_THREAD, 1), cores))
    if n_jobs < 0:
        return max(cores + 1 + n_jobs, 1)
    return int(n_jobs)


def _blas_controller():
    global _controller
    # Finding the loaded libraries takes milliseconds: once, or until a BLAS is loaded.
    if _controller is None or not _controller.lib_controllers:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


def _apply(n_threads):
    """Set the BLAS threads, and torch's when torch is loaded (under ``_lock``)."""
    # Each limit() sets the count; the first one's handle knows the values to restore.
    limiter = _blas_controller().limit(limits=n_threads, user_api="blas")
    _saved.setdefault("blas", limiter)
    torch = sys.modules.get("torch")
    if torch is not None:
        _saved.setdefault("torch", torch.get_num_threads())
        if torch.get_num_threads() != n_threads:
            torch.set_num_threads(n_threads)


def sync_torch_threads():
    """Give torch the thread count of the call in progress (no-op outside one).

    Called where a call's torch path starts (:func:`sklearn_cmm._torch.resolve_device`),
    for calls that entered :func:`sized_threads` before torch was loaded.
    """
    with _lock:
        if _requests:
            _apply(_requests[-1])


@contextmanager
def sized_threads(work, n_jobs=None):
    """Run the block with :func:`threads_for` ``(work, n_jobs)`` CPU threads.

    Sets the BLAS libraries' threads and torch's intra-op threads, and restores the
    values found before when the block ends, also on an exception. Concurrent or nested
    blocks share the process-wide settings: the latest block's count holds until it ends,
    and the first block's values come back after the last.

    Yields
    ------
    n_threads : int
        The thread count set.
    """
    n_threads = threads_for(work, n_jobs)
    with _lock:
        _requests.append(n_threads)
        _apply(n_threads)
    try:
        yield n_threads
    finally:
        with _lock:
            _requests.remove(n_threads)
            if _requests:
                _apply(_requests[-1])
            else:
                _saved.pop("blas").restore_original_limits()
                if "torch" in _saved:
                    sys.modules["torch"].set_num_threads(_saved.pop("torch"))


@contextmanager
def single_torch_thread():
    """torch's intra-op threads at one for the block (restored after); BLAS's as they are.

    For a training on numpy arrays that runs a torch kernel between numpy's BLAS products
    (SeMoBridge-T's AdamW): two thread pools that each take every core wait for each
    other's spinning threads (a step at 200 classes x 8 shots x 256-d on 2 cores: 27 ms,
    18 ms with torch on one thread). A block that another thread's
    :func:`sized_threads` ends inside may find torch's count reset, which costs time,
    never a different result.
    """
    torch = sys.modules["torch"]
    with _lock:
        saved = torch.get_num_threads()
        torch.set_num_threads(1)
    try:
        yield
    finally:
        with _lock:
            torch.set_num_threads(saved)
