"""The feature file: one compressed ``.npz`` per (dataset, model, pretrained weights).

Arrays (``n_*`` images of the split, ``C`` classes, ``D`` the embedding dimension, ``W`` the
text transformer's width):

=====================================  ==============  =======================================
key                                    shape           content
=====================================  ==============  =======================================
``train_features``, ``val_features``,  (n, D) float32  raw image embeddings (not normalised),
``test_features``                                      in the split file's order
``train_labels``, ...                  (n,) int64      CoOp's labels
``class_names``                        (C,) str        name of each label
``text_features``                      (C, D) float32  prompt-ensembled class prototypes of
                                                       every prompt set together (unit rows)
``text_features_<set>``                (C, D) float32  the same for one prompt set:
                                                       ``clip`` (CLIP's 7 templates), ``coop``
                                                       (the dataset's CoOp template),
                                                       ``cupl`` (description sentences)
``pre_projection_text_features``,      (C, W) float32  mean over the prompts of the text
``pre_projection_text_features_<set>``                 features before ``text_projection``
``text_projection``                    (W, D) float32  CLIP's text projection
``metadata``                           () str          JSON: dataset, model, pretrained,
                                                       embed_dim, prompt sets, templates,
                                                       date, package version, ...
=====================================  ==============  =======================================

A split the dataset lacks (ImageNet's val; train and val of the test-only ImageNet
variants) is stored with 0 rows. "Every prompt set together" weighs each set equally:
the unit mean of the sets' unit prototypes (and the mean of their pre-projection means),
so that 50 description sentences do not outvote one hand-written template.
"""

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from .._math.basic import l2_normalize
from .datasets import SPLITS

PROMPT_SETS = ("clip", "coop", "cupl")


def model_tag(model, pretrained):
    """``ViT-B-16__openai``: a model and its weights in a file name; a checkpoint file
    counts by its stem and a digest of its resolved path (``epoch_10-1a2b3c4d``), so that
    the ``epoch_10.pt`` of two training runs do not share a name."""
    tag = "none"
    if pretrained:
        path = Path(str(pretrained)).expanduser()
        tag = path.stem
        if path.is_file():
            tag += "-" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    return f"{_clean(model)}__{_clean(tag)}"


def _clean(text):
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text))


def feature_file_name(dataset, model, pretrained):
    """``oxford_pets__ViT-B-16__openai.npz`` (:func:`model_tag`)."""
    return f"{_clean(dataset)}__{model_tag(model, pretrained)}.npz"


def save_features(path, arrays, metadata):
    """Write a feature file (compressed); ``metadata`` is a JSON-able dict."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays, metadata=np.array(json.dumps(metadata)))
    tmp.replace(path)  # a crash never leaves a half-written file under the final name


def load_features(path):
    """Read a feature file into a dict of arrays, with ``metadata`` parsed from JSON."""
    with np.load(path, allow_pickle=False) as npz:
        data = {key: npz[key] for key in npz.files}
    data["metadata"] = json.loads(str(data["metadata"]))
    data["class_names"] = [str(name) for name in data["class_names"]]
    for split in SPLITS:
        data[f"{split}_labels"] = data[f"{split}_labels"].astype(np.int64)
    return data


def load_labels(path):
    """``(train_labels, val_labels)`` of a feature file, without reading its features."""
    with np.load(path, allow_pickle=False) as npz:
        return tuple(npz[f"{split}_labels"].astype(np.int64) for split in ("train", "val"))


def list_feature_files(features_dir):
    """The ``*.npz`` feature files of a folder with their metadata, sorted by name."""
    out = []
    for path in sorted(Path(features_dir).glob("*.npz")):
        if path.name.endswith(".tmp.npz"):
            continue
        with np.load(path, allow_pickle=False) as npz:
            if "metadata" in npz.files:
                out.append((path, json.loads(str(npz["metadata"]))))
    return out


def text_arrays(prompt_features, pre_projection, text_projection):
    """The text entries of a feature file from each prompt set's per-prompt features.

    Parameters
    ----------
    prompt_features : dict of str -> list of ndarray
        For each prompt set, one ``(n_prompts_c, D)`` array per class (prompt embeddings
        after the projection).
    pre_projection : dict of str -> list of ndarray
        The same before ``text_projection``, ``(n_prompts_c, W)`` per class.
    text_projection : ndarray of shape (W, D)

    Returns
    -------
    arrays : dict of str -> ndarray
    """
    arrays = {"text_projection": np.asarray(text_projection, dtype=np.float32)}
    sets = [name for name in PROMPT_SETS if name in prompt_features] + sorted(
        set(prompt_features) - set(PROMPT_SETS)
    )
    for name in sets:
        arrays[f"text_features_{name}"] = l2_normalize(np.stack(
            [l2_normalize(l2_normalize(p).mean(axis=0)) for p in prompt_features[name]]
        )).astype(np.float32)
        arrays[f"pre_projection_text_features_{name}"] = np.stack(
            [p.mean(axis=0) for p in pre_projection[name]]
        ).astype(np.float32)
    arrays["text_features"] = l2_normalize(
        np.mean([arrays[f"text_features_{n}"] for n in sets], axis=0)
    ).astype(np.float32)
    arrays["pre_projection_text_features"] = np.mean(
        [arrays[f"pre_projection_text_features_{n}"] for n in sets], axis=0
    ).astype(np.float32)
    return arrays
