"""The ``device`` parameter of every estimator, checked in one place without torch."""

import re
import sys

#: torch refuses an index with a leading zero ("cuda:01")
_DEVICE_PATTERN = re.compile(r"(auto|cpu|cuda(:(0|[1-9][0-9]*))?)\Z")


def check_device(device):
    """Raise ``ValueError`` unless ``device`` is ``"auto"``, ``"cpu"``, ``"cuda[:N]"``.

    A ``torch.device`` of type cpu or cuda is accepted too. Only the spelling is checked
    here, so that a closed-form fit never imports torch; whether CUDA is there is checked
    when a model or a training loop first needs the device
    (:func:`sklearn_cmm._torch.resolve_device`).
    """
    torch = sys.modules.get("torch")  # a torch.device can only exist once torch is loaded
    if torch is not None and isinstance(device, torch.device):
        if device.type in ("cpu", "cuda"):
            return
    elif isinstance(device, str) and _DEVICE_PATTERN.match(device):
        return
    raise ValueError(
        f"device={device!r} is not supported; use 'auto' (the GPU when there is one), "
        "'cpu', 'cuda' or 'cuda:N'."
    )
