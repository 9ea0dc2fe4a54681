"""The hand-written losses' arrays: numpy (the CPU) and torch (a GPU; here on the CPU)."""

from types import SimpleNamespace

import numpy as np
import torch

#: backend name -> a backend (as :class:`sklearn_cmm._torch.ArrayBackend`) in a dtype.
BACKENDS = {
    "numpy": lambda dtype: SimpleNamespace(xp=np, asarray=lambda a: np.array(a, dtype=dtype),
                                           asindices=np.asarray),
    "torch": lambda dtype: SimpleNamespace(
        xp=torch, asarray=lambda a: torch.tensor(a, dtype=getattr(torch, np.dtype(dtype).name)),
        asindices=torch.as_tensor),
}


def train_on_torch(monkeypatch):
    """Make every estimator's training run on torch tensors (on the CPU here), as on a
    GPU, instead of numpy arrays: :class:`sklearn_cmm._torch.ArrayBackend` picks torch."""
    from sklearn_cmm import _torch

    monkeypatch.setattr(_torch.ArrayBackend, "__init__",
                        lambda self, device, xp=None: vars(self).update(device=device, xp=torch))
