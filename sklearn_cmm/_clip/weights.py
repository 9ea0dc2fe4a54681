"""Where a CLIP model's weights come from: pretrained tags, local checkpoints, bundled files.

``pretrained`` is an open_clip tag (``"openai"``), a local checkpoint file, ``"bundled"``
(``sklearn_cmm/_bundled/<model>.safetensors``) or None (random weights, seeded, for
benchmarks and tests). Tags are looked up in the local cache first and are loaded through
the same local-file path as any checkpoint, with the tag's preprocessing and activation;
without a network a missing tag fails at once with what to do instead.
"""

import os
import urllib.error
import urllib.parse
import urllib.request
import warnings
from functools import lru_cache
from pathlib import Path

from . import config
from .config import PREPROCESS_KEYS, config_preprocess, open_clip_module

#: The ``pretrained`` value that selects ``BUNDLED_DIR/<model>.safetensors``.
BUNDLED = "bundled"


def weights_source(name, pretrained):
    """``(source, weights)`` for ``pretrained``: a tag, a local file or random weights."""
    if pretrained is None:
        return "random", None
    text = os.fspath(pretrained)
    if text == BUNDLED:
        path = config.BUNDLED_DIR / f"{name}.safetensors"
        if not path.is_file():
            raise ValueError(
                f"pretrained='bundled' but model {name!r} has no bundled weights "
                f"({str(path)!r} does not exist)."
            )
        return "file", str(path.resolve())
    if not isinstance(pretrained, os.PathLike) and open_clip_module().is_pretrained_cfg(name, text):
        return "tag", text
    path = Path(text).expanduser()
    if path.is_file():
        return "file", str(path.resolve())
    tags = open_clip_module().list_pretrained_tags_by_model(name)
    raise ValueError(
        f"pretrained={text!r} is neither a pretrained tag of model {name!r} "
        f"(tags: {', '.join(tags) or 'none'}) nor an existing checkpoint file."
    )


def _is_offline():
    # huggingface_hub reads HF_HUB_OFFLINE once at import; the environment may change later.
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return constants.HF_HUB_OFFLINE or flag in {"1", "ON", "YES", "TRUE"}


@lru_cache(maxsize=None)
def _hub_reachable(url):
    """Whether the host of ``url`` answers at all: one request with a short timeout.

    A missing network makes the hub client retry for a minute before failing; this check
    fails in seconds instead.
    """
    parts = urllib.parse.urlsplit(url)
    request = urllib.request.Request(f"{parts.scheme}://{parts.netloc}/", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=3):
            return True
    except urllib.error.HTTPError:
        return True  # the host answered, even if with an error status
    except (urllib.error.URLError, OSError):
        return False


def _hub_file_candidates(hf_hub):
    """``(repo_id, filenames)`` of an open_clip ``hf_hub`` entry, safetensors first."""
    repo_id, filename = os.path.split(hf_hub)
    constants = open_clip_module().constants
    filename = filename or constants.HF_WEIGHTS_NAME
    if filename == constants.HF_WEIGHTS_NAME:
        safe = constants.HF_SAFE_WEIGHTS_NAME
    else:
        safe = os.path.splitext(filename)[0] + ".safetensors"
    return repo_id, [safe, filename]


def _cached_tag_file(tag_cfg, cache_dir):
    """The local file of a pretrained tag if it was downloaded before, else None."""
    from huggingface_hub import try_to_load_from_cache

    if "file" in tag_cfg:
        return tag_cfg["file"]
    if tag_cfg.get("hf_hub"):
        repo_id, filenames = _hub_file_candidates(tag_cfg["hf_hub"])
        for filename in filenames:
            found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
            if isinstance(found, str):
                return found
    if tag_cfg.get("url"):
        # open_clip's own download folder for checkpoints hosted outside the hub.
        folder = Path(cache_dir).expanduser() if cache_dir else Path("~/.cache/clip").expanduser()
        path = folder / os.path.basename(tag_cfg["url"])
        if path.is_file():
            return str(path)
    return None


def tag_checkpoint(name, tag, tag_cfg, cache_dir):
    """Local checkpoint file of a pretrained tag: from the cache, else downloaded."""
    found = _cached_tag_file(tag_cfg, cache_dir)
    if found is not None:
        return found
    from huggingface_hub import constants

    url = constants.ENDPOINT if tag_cfg.get("hf_hub") else tag_cfg.get("url", "")
    if not url or _is_offline() or not _hub_reachable(url):
        where = f"cache_dir={os.fspath(cache_dir)!r}" if cache_dir else "the default cache"
        raise RuntimeError(
            f"The weights of CLIP model {name!r} pretrained={tag!r} are not in {where} and "
            "cannot be downloaded (no network or HF_HUB_OFFLINE is set). Either pass "
            "pretrained='/path/to/checkpoint' (a .safetensors, .bin or .pt state dict of "
            "this model), or download them once where there is a network, e.g. "
            f"open_clip.create_model({name!r}, pretrained={tag!r}, cache_dir=...), and "
            "pass that folder as cache_dir."
        )
    return open_clip_module().download_pretrained(tag_cfg, cache_dir=cache_dir)


def local_checkpoint_settings(name):
    """``(preprocess, quick_gelu)`` to load a local checkpoint of model ``name`` with.

    open_clip gives a local file its default preprocessing whatever the model (open_clip
    issue #1068). Here a config's own ``preprocess_cfg`` wins; otherwise every setting
    that all of the model's pretrained tags agree on is used (e.g. every RN50 checkpoint
    needs QuickGELU), and a setting they disagree on keeps the config's value, with a
    warning, since the file alone cannot tell which training it comes from.
    """
    if config_preprocess(name) is not None:
        return dict(config_preprocess(name)), False
    open_clip = open_clip_module()
    tag_cfgs = [
        open_clip.get_pretrained_cfg(name, tag)
        for tag in open_clip.list_pretrained_tags_by_model(name)
    ]
    if not tag_cfgs:
        return {}, False
    preprocess, disputed = {}, []
    for key in (*PREPROCESS_KEYS[1:], "quick_gelu"):
        default = False if key == "quick_gelu" else None
        values = {repr(cfg.get(key, default)) for cfg in tag_cfgs}
        if len(values) > 1:
            disputed.append(key)
        elif key in tag_cfgs[0] and key != "quick_gelu":
            preprocess[key] = tag_cfgs[0][key]
    quick_gelu = "quick_gelu" not in disputed and tag_cfgs[0].get("quick_gelu", False)
    if disputed:
        warnings.warn(
            f"The pretrained tags of CLIP model {name!r} differ in {disputed}, so a local "
            f"checkpoint of it is loaded with the model config's {disputed}. If the "
            "checkpoint was trained otherwise (OpenAI weights use QuickGELU: model "
            f"{name + '-quickgelu'!r}), pass model='/path/to/config.json', an open_clip "
            "config with 'quick_gelu' and a 'preprocess_cfg'.",
            UserWarning,
            stacklevel=2,
        )
    return preprocess, bool(quick_gelu)


