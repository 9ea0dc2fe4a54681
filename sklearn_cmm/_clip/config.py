"""open_clip model configs: names, bundled models, ``.json`` configs and their preprocessing.

``model`` is an open_clip model name, the name of a model bundled with the package
(``sklearn_cmm/_bundled/<name>.json``) or the path of a ``.json`` open_clip model config.
A config may carry a ``preprocess_cfg`` (mean, std, interpolation, resize mode), which
open_clip itself only honours for hub and ``local-dir:`` models; it is kept here and
applied when the model is loaded.
"""

import json
import os
import tempfile
import threading
from pathlib import Path

#: Where bundled models live: ``<name>.json`` (model config) and ``<name>.safetensors``.
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "_bundled"

#: Preprocessing settings a config or a pretrained tag may set. The image size is not among
#: them: it always comes from the model's vision tower.
PREPROCESS_KEYS = ("mode", "mean", "std", "interpolation", "resize_mode", "fill_color")

#: Values of the ``precision`` parameter of the featurizer and the text encoder.
PRECISIONS = ("auto", "fp32", "fp16", "bf16")

_LOCK = threading.RLock()
_REGISTERED_CONFIGS = {}  # resolved .json path -> (its file_version, open_clip model name)
_CONFIG_PREPROCESS = {}  # model name -> preprocess_cfg carried by its registered config
_CONFIG_VERSIONS = {}  # model name -> file_version of its registered config


def file_version(path):
    """``(modification time in ns, size)`` of a file: what tells an edited or replaced
    file at the same path from the one read before."""
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size


def config_version(name):
    """The :func:`file_version` of the config that last changed model ``name`` (None for
    open_clip's own models): part of a loaded model's identity."""
    with _LOCK:
        return _CONFIG_VERSIONS.get(name)


def open_clip_module():
    """The ``open_clip`` module, imported on first use.

    open_clip (with torch and torchvision) takes seconds to import: only when a model is
    used, so that importing sklearn_cmm stays fast.
    """
    import open_clip

    return open_clip


def _register_config(path):
    """Register the open_clip model config at ``path`` and return its model name; again
    when the file has changed since (an edited config replaces its earlier version)."""
    path = Path(path).expanduser().resolve()
    with _LOCK:
        try:
            version = file_version(path)
            if _REGISTERED_CONFIGS.get(path, (None,))[0] == version:
                return _REGISTERED_CONFIGS[path][1]
            config = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"Cannot read the model config {str(path)!r}: {exc}") from exc
        missing = {"embed_dim", "vision_cfg", "text_cfg"} - set(config)
        if missing:
            raise ValueError(
                f"{str(path)!r} is not an open_clip model config: it lacks {sorted(missing)}."
            )
        preprocess = config.pop("preprocess_cfg", {})
        unknown = set(preprocess) - set(PREPROCESS_KEYS) - {"size"}
        if unknown:
            raise ValueError(
                f"preprocess_cfg of {str(path)!r} has unknown keys {sorted(unknown)}; "
                f"expected some of {list(PREPROCESS_KEYS)}."
            )
        preprocess = {k: v for k, v in preprocess.items() if k != "size"}
        name = path.stem
        open_clip = open_clip_module()
        existing = open_clip.get_model_config(name)
        # open_clip's own models carry no preprocess_cfg of a config (theirs comes with
        # their pretrained tags): a config of that name that sets one is another model
        changed = existing != config or _CONFIG_PREPROCESS.get(name, {}) != preprocess
        if changed and existing is not None and path not in _REGISTERED_CONFIGS:
            raise ValueError(
                f"open_clip already has a different model config named {name!r}; rename "
                f"{str(path)!r} so that its file name (the model name) is unique."
            )
        if existing != config:
            # open_clip registers configs from files and passes every config key to the
            # model's constructor, so a config with a preprocess_cfg is registered from a
            # stripped copy. open_clip reads a file when it is added (and skips a missing
            # one when it rescans), so the copy lives only that long.
            with tempfile.TemporaryDirectory(prefix="sklearn_cmm_configs_") as folder:
                stripped = Path(folder) / f"{name}.json"
                stripped.write_text(json.dumps(config))
                open_clip.add_model_config(stripped)
        if changed:  # another model than any loaded under this name before
            _CONFIG_VERSIONS[name] = version
            _CONFIG_PREPROCESS[name] = preprocess
        _REGISTERED_CONFIGS[path] = version, name
        return name


def model_name(model):
    """The open_clip name of ``model``, registering a bundled or ``.json`` config first.

    Parameters
    ----------
    model : str or path-like
        An open_clip model name, a bundled model's name or the path of a ``.json`` config.

    Returns
    -------
    name : str
    """
    text = os.fspath(model)
    if text.endswith(".json"):
        return _register_config(text)
    if text in bundled_model_names():
        return _register_config(BUNDLED_DIR / f"{text}.json")
    if open_clip_module().get_model_config(text) is None:
        bundled_names = bundled_model_names()
        raise ValueError(
            f"Unknown CLIP model {text!r}: use an open_clip model name "
            "(open_clip.list_models()), a bundled model "
            f"({', '.join(bundled_names) or 'none installed'}) or the path of a .json "
            "open_clip model config."
        )
    return text


def embed_dim_of(model):
    """Embedding dimension of ``model``, read from its config (no weights are loaded)."""
    return int(open_clip_module().get_model_config(model_name(model))["embed_dim"])



def bundled_model_names():
    """Names of the model configs bundled with the package (not the other ``.json`` files)."""
    names = []
    for path in sorted(BUNDLED_DIR.glob("*.json")):
        try:
            content = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(content, dict) and {"embed_dim", "vision_cfg", "text_cfg"} <= set(content):
            names.append(path.stem)
    return names


def config_preprocess(name):
    """The ``preprocess_cfg`` a registered ``.json`` config gave model ``name``, or None."""
    return _CONFIG_PREPROCESS.get(name)
