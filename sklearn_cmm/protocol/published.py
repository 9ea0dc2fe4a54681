"""Published few-shot results to compare with: the SeMoBridge paper's tables.

The CSV files in ``published/`` are the SeMoBridge authors' result tables (see
``published/README.md``): for each backbone, rows of (method, shots) and one column per
dataset, cells like ``91.79±0.19 0:00:00`` (mean top-1 % ± std over seeds 1-3, then
training time), ``85.89`` (mean only) or empty. :func:`load_published` parses them into
one long table.
"""

import csv
import re
from functools import lru_cache
from importlib import resources

#: Our method names -> the method names in the published tables.
PUBLISHED_METHOD = {
    "zero-shot": "CLIP zero-shot",
    "tip-adapter": "Tip-Adapter",
    "tip-adapter-f": "Tip-Adapter-F",
    "semobridge": "SeMoBridge",
    "semobridge-t": "SeMoBridge-T",
}

#: open_clip model names -> the backbone of the published tables.
BACKBONES = {"ViT-B-16": "ViT-B/16", "RN50": "RN-50"}

_FILES = {
    "semobridge_baselines_vitb16.csv": "ViT-B/16",
    "semobridge_baselines_rn50.csv": "RN-50",
    "semobridge_results_closed_form.csv": None,  # backbone in the method column
    "semobridge_results_trained.csv": None,
}
_RESULT_METHODS = {
    "semobridge_results_closed_form.csv": "SeMoBridge",
    "semobridge_results_trained.csv": "SeMoBridge-T",
}
_PREFIX_BACKBONE = {"vit_b16": "ViT-B/16", "rn50": "RN-50"}
_NUMBER = re.compile(r"^\s*([0-9.]+)\s*(?:±\s*([0-9.]+|x))?\s*(?:(\d+):(\d\d):(\d\d)|x)?\s*$")


def parse_cell(text):
    """``"91.79±0.19 0:00:28"`` -> ``(91.79, 0.19, 28.0)``; missing parts are None.

    Empty cells, ``#DIV/0!`` and other non-numbers give ``(None, None, None)``.
    """
    match = _NUMBER.match(text or "")
    if not match or not text.strip():
        return None, None, None
    mean, std, h, m, s = match.groups()
    std = None if std in (None, "x") else float(std)
    seconds = None if h is None else 3600.0 * int(h) + 60.0 * int(m) + int(s)
    return float(mean), std, seconds


def _read_rows(name):
    text = (resources.files(__package__) / "published" / name).read_text(encoding="utf-8")
    rows = list(csv.reader(text.splitlines()))
    start = next(i for i, row in enumerate(rows) if row[:3] == ["Model", "Method", "Shots"])
    return rows[start], rows[start + 1 :]


@lru_cache(maxsize=None)
def load_published():
    """Every published number, one record per (backbone, method, shots, dataset).

    Returns
    -------
    records : tuple of dict
        Keys ``backbone``, ``method`` (published name), ``shots`` (0 for zero-shot),
        ``dataset`` (published column name, e.g. ``"OxfordPets"``), ``mean`` and ``std``
        (top-1 %, ``std`` None when not given), ``time_s`` (training time, None when not
        given), ``source`` (file name). ``dataset="AVERAGE"`` rows hold the tables' own
        average column. Where two files give the same number, the first one is kept.
    """
    records, seen = [], set()
    for name, backbone in _FILES.items():
        header, rows = _read_rows(name)
        datasets = header[3:]
        model = backbone
        for row in rows:
            if len(row) < 4 or not row[2].strip():
                continue
            method = row[1].strip()
            if backbone is None:  # results files: "vit_b16_z1z2z3:..." rows
                model = _PREFIX_BACKBONE[method.split("_z")[0]]
                method = _RESULT_METHODS[name]
            elif row[0].strip():
                model = BACKBONES.get(row[0].strip(), row[0].strip())
            shots = int(row[2])
            for column, cell in zip(datasets, row[3:]):
                if column == "AVERAGE TRAINING TIME":
                    continue
                dataset = "AVERAGE" if column == "AVERAGE ACCURACY" else column
                mean, std, seconds = parse_cell(cell)
                key = (model, method, shots, dataset)
                if mean is None or key in seen:
                    continue
                seen.add(key)
                records.append({"backbone": model, "method": method, "shots": shots,
                                "dataset": dataset, "mean": mean, "std": std,
                                "time_s": seconds, "source": name})
    return tuple(records)


def published_result(model, method, shots, dataset):
    """The published record for our ``method`` name, or None.

    Parameters
    ----------
    model : str
        The open_clip model name of the features (``"ViT-B-16"``, ``"RN50"``).
    method : str
        Our method name (``"semobridge"``); zero-shot matches the published 0-shot row at
        every number of shots.
    shots : int
    dataset : str
        The published column name (``DatasetSpec.name``) or ``"AVERAGE"``.
    """
    backbone = BACKBONES.get(model)
    published = PUBLISHED_METHOD.get(method)
    if backbone is None or published is None:
        return None
    shots = 0 if method == "zero-shot" else shots
    for record in load_published():
        if (record["backbone"], record["method"], record["shots"], record["dataset"]) == (
            backbone, published, shots, dataset
        ):
            return record
    return None
