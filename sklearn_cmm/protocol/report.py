"""What the subcommands share: argument types, summaries, run records."""

import argparse
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


class UsageError(Exception):
    """A wrong argument found by a subcommand before its work: one line, exit status 2."""


def int_list(text):
    """``"1,2,4"`` -> ``[1, 2, 4]``: an argparse type with a one-line error."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive whole numbers such as 1,2,4; got {text!r}"
        )
    # a repeated seed would count twice in the means and standard deviations
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(
            f"{', '.join(map(str, repeated))} given more than once in {text!r}")
    return values


def positive_int(text):
    """``"4"`` -> ``4``: an argparse type for counts (threads, batch sizes)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number; got {text!r}")
    return value


def method_list(text):
    """``"cmm,semobridge"`` -> ``["cmm", "semobridge"]``, each a known method name."""
    from .methods import METHODS

    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method {', '.join(map(repr, unknown)) or repr(text)}; "
            f"choose among {','.join(METHODS)}"
        )
    return names


def existing_dir(text):
    """A folder that exists, as a :class:`~pathlib.Path`."""
    path = Path(text).expanduser()
    if not path.is_dir():
        problem = "is not a folder" if path.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return path


def writable_dir(text):
    """A folder that exists or can be made, and is writable, as a :class:`~pathlib.Path`.

    Checked without making anything, so that a wrong ``--out`` fails before the work
    rather than after it, and leaves no folder behind: the nearest existing one of the
    path and its parents must be a writable folder.
    """
    path = Path(text).expanduser()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(
            f"{str(text)!r} cannot be a folder: {str(existing)!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(
            f"{str(text)!r} cannot be written: {str(existing)!r} is not writable")
    return path


def available_device(text):
    """``--device``: a device the package accepts and this machine has (CUDA if asked for)."""
    from .._torch import resolve_device  # imports torch: when parsing, not at --help

    try:
        resolve_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def limit_threads(n_threads):
    """Limit torch's and the BLAS libraries' CPU threads (None leaves them alone)."""
    if n_threads is None:
        return
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n_threads)
    threadpool_limits(n_threads)


def mean_std(rows, keys, value="accuracy"):
    """``{key tuple: (mean, std, n)}`` of ``row[value]`` over the rows sharing ``keys``."""
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row[value])
    return {
        key: (float(np.mean(values)), float(np.std(values)), len(values))
        for key, values in groups.items()
    }


def hms(seconds):
    """Seconds as ``H:MM:SS``."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def cpu_model():
    """The CPU's model name: timings of two runs compare only on the same one.

    From ``/proc/cpuinfo`` on Linux, where :func:`platform.processor` is empty; else
    :func:`platform.processor` or the architecture.
    """
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_environment():
    """Date and versions for a results file, so numbers can be compared across commits."""
    import sklearn
    import torch

    from .. import __version__

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "sklearn_cmm": __version__,
            "scikit-learn": sklearn.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "machine": {"platform": platform.platform(), "processor": cpu_model()},
    }


def write_json(path, record):
    """Write ``record`` as indented JSON (values JSON cannot hold become strings)."""
    path.write_text(json.dumps(record, indent=2, default=str))
