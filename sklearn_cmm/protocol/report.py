"""What the demo and the benchmark runner share: argument types, summaries, run records."""

import argparse
import json
import platform
from datetime import datetime, timezone

import numpy as np


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
    return values


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
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
    }


def write_json(path, record):
    """Write ``record`` as indented JSON (values JSON cannot hold become strings)."""
    path.write_text(json.dumps(record, indent=2, default=str))
