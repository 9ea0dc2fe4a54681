"""The CLIP model layer: open_clip loading, the process-wide model cache, text encoding.

Everything that touches open_clip goes through here, for the featurizer (image side) and
for the classifiers (text side, through :class:`CLIPTextEncoder`):

* ``model`` is an open_clip model name, the name of a model bundled with the package
  (``sklearn_cmm/_bundled/<name>.json``) or the path of a ``.json`` open_clip model config.
  A config may carry a ``preprocess_cfg`` (mean, std, interpolation, resize mode), which
  open_clip itself only honours for hub and ``local-dir:`` models.
* ``pretrained`` is an open_clip tag (``"openai"``), a local checkpoint file,
  ``"bundled"`` (``sklearn_cmm/_bundled/<model>.safetensors``) or None (random weights,
  seeded, for benchmarks and tests). Tags are looked up in the local cache first and are
  loaded through the same local-file path as any checkpoint, with the tag's preprocessing
  and activation; without a network a missing tag fails at once with what to do instead.
* A loaded model is kept in a small process-wide cache keyed by the weights and device,
  so that a pipeline's featurizer and classifier share one copy. Precision is not part of
  the key: weights stay in float32 and fp16/bf16 run as autocast (AMP).
"""

import json
import os
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ._torch import resolve_device

#: Where bundled models live: ``<name>.json`` (model config) and ``<name>.safetensors``.
_BUNDLED_DIR = Path(__file__).resolve().parent / "_bundled"

#: The ``pretrained`` value that selects ``_BUNDLED_DIR/<model>.safetensors``.
BUNDLED = "bundled"

PRECISIONS = ("auto", "fp32", "fp16", "bf16")

_AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

# Preprocessing settings a config or a pretrained tag may set. The image size is not among
# them: it always comes from the model's vision tower.
_PREPROCESS_KEYS = ("mode", "mean", "std", "interpolation", "resize_mode", "fill_color")

# Models kept loaded at once: enough for a featurizer and a classifier on one model while
# a grid search compares a couple of others, without holding every model ever used.
_MAX_CACHED_MODELS = 3

# Encoded prompts remembered per model, so that refits (grid search) skip the text tower.
_MAX_MEMO_TEXTS = 20_000

# Featurizer models remembered for default_text_encoder.
_MAX_RECENT_FEATURIZERS = 16

_LOCK = threading.RLock()
_MODEL_CACHE = OrderedDict()  # _ModelKey -> _LoadedModel
_TEXT_MEMO = OrderedDict()  # (_ModelKey, precision, projected, text) -> float32 row
_RECENT_FEATURIZERS = OrderedDict()  # CLIPTextEncoder -> embedding dimension
_REGISTERED_CONFIGS = {}  # resolved .json path -> open_clip model name
_CONFIG_PREPROCESS = {}  # model name -> preprocess_cfg carried by its registered config
_config_dir = None  # temporary folder of the configs registered with open_clip


def _open_clip():
    # open_clip (with torchvision) takes seconds to import: only when a model is used, so
    # that importing sklearn_cmm stays fast.
    import open_clip

    return open_clip


def _stripped_config_dir():
    # open_clip registers configs from files and passes every config key to the model's
    # constructor, so a config with a preprocess_cfg is registered from a stripped copy.
    global _config_dir
    if _config_dir is None:
        _config_dir = tempfile.TemporaryDirectory(prefix="sklearn_cmm_configs_")
    return Path(_config_dir.name)


def _register_config(path):
    """Register the open_clip model config at ``path`` (once) and return its model name."""
    path = Path(path).expanduser().resolve()
    with _LOCK:
        if path in _REGISTERED_CONFIGS:
            return _REGISTERED_CONFIGS[path]
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"Cannot read the model config {str(path)!r}: {exc}") from exc
        missing = {"embed_dim", "vision_cfg", "text_cfg"} - set(config)
        if missing:
            raise ValueError(
                f"{str(path)!r} is not an open_clip model config: it lacks {sorted(missing)}."
            )
        preprocess = config.pop("preprocess_cfg", {})
        unknown = set(preprocess) - set(_PREPROCESS_KEYS) - {"size"}
        if unknown:
            raise ValueError(
                f"preprocess_cfg of {str(path)!r} has unknown keys {sorted(unknown)}; "
                f"expected some of {list(_PREPROCESS_KEYS)}."
            )
        preprocess = {k: v for k, v in preprocess.items() if k != "size"}
        name = path.stem
        open_clip = _open_clip()
        existing = open_clip.get_model_config(name)
        if existing is not None and (
            existing != config or _CONFIG_PREPROCESS.get(name, preprocess) != preprocess
        ):
            raise ValueError(
                f"open_clip already has a different model config named {name!r}; rename "
                f"{str(path)!r} so that its file name (the model name) is unique."
            )
        if existing is None:
            stripped = _stripped_config_dir() / f"{name}.json"
            stripped.write_text(json.dumps(config))
            open_clip.add_model_config(stripped)
        _CONFIG_PREPROCESS[name] = preprocess
        _REGISTERED_CONFIGS[path] = name
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
    bundled = _BUNDLED_DIR / f"{text}.json"
    if bundled.is_file():
        return _register_config(bundled)
    if _open_clip().get_model_config(text) is None:
        bundled_names = sorted(p.stem for p in _BUNDLED_DIR.glob("*.json"))
        raise ValueError(
            f"Unknown CLIP model {text!r}: use an open_clip model name "
            "(open_clip.list_models()), a bundled model "
            f"({', '.join(bundled_names) or 'none installed'}) or the path of a .json "
            "open_clip model config."
        )
    return text


def embed_dim_of(model):
    """Embedding dimension of ``model``, read from its config (no weights are loaded)."""
    return int(_open_clip().get_model_config(model_name(model))["embed_dim"])


def resolve_precision(precision, device):
    """``"fp32"``, ``"fp16"`` or ``"bf16"`` for ``precision`` on the torch ``device``.

    ``"auto"`` is fp32 on the CPU, where half precision rarely pays off, and AMP on CUDA:
    bf16 where the GPU supports it (it cannot overflow), else fp16.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}.")
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast(device, precision):
    """The AMP context of a resolved ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AMP_DTYPES[precision])


def _canonical_device(device):
    device = resolve_device(device)
    if device.type == "cuda" and device.index is None:
        # "cuda" and "cuda:0" must hit the same cache entry.
        device = torch.device("cuda", torch.cuda.current_device())
    return device


@dataclass(frozen=True)
class _ModelKey:
    """Identity of loaded weights: model name, where the weights come from, device."""

    name: str
    source: str  # "tag", "file" or "random"
    weights: str | None  # the tag, the resolved file path, or None
    device: str


def _weights_source(name, pretrained):
    """``(source, weights)`` for ``pretrained``: a tag, a local file or random weights."""
    if pretrained is None:
        return "random", None
    text = os.fspath(pretrained)
    if text == BUNDLED:
        path = _BUNDLED_DIR / f"{name}.safetensors"
        if not path.is_file():
            raise ValueError(
                f"pretrained='bundled' but model {name!r} has no bundled weights "
                f"({str(path)!r} does not exist)."
            )
        return "file", str(path.resolve())
    if not isinstance(pretrained, os.PathLike) and _open_clip().is_pretrained_cfg(name, text):
        return "tag", text
    path = Path(text).expanduser()
    if path.is_file():
        return "file", str(path.resolve())
    tags = _open_clip().list_pretrained_tags_by_model(name)
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
    constants = _open_clip().constants
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


def _tag_checkpoint(name, tag, tag_cfg, cache_dir):
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
    return _open_clip().download_pretrained(tag_cfg, cache_dir=cache_dir)


def _local_checkpoint_settings(name):
    """``(preprocess, quick_gelu)`` to load a local checkpoint of model ``name`` with.

    open_clip gives a local file its default preprocessing whatever the model (open_clip
    issue #1068). Here a config's own ``preprocess_cfg`` wins; otherwise every setting
    that all of the model's pretrained tags agree on is used (e.g. every RN50 checkpoint
    needs QuickGELU), and a setting they disagree on keeps the config's value, with a
    warning, since the file alone cannot tell which training it comes from.
    """
    if name in _CONFIG_PREPROCESS:
        return dict(_CONFIG_PREPROCESS[name]), False
    open_clip = _open_clip()
    tag_cfgs = [
        open_clip.get_pretrained_cfg(name, tag)
        for tag in open_clip.list_pretrained_tags_by_model(name)
    ]
    if not tag_cfgs:
        return {}, False
    preprocess, disputed = {}, []
    for key in (*_PREPROCESS_KEYS[1:], "quick_gelu"):
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


def _text_tower(model):
    """The module holding the text tower's ``text_projection``."""
    return getattr(model, "text", model)


class _LoadedModel:
    """An open_clip model in eval mode with its preprocessing, tokenizer and metadata."""

    def __init__(self, key, model, tokenizer, embed_dim):
        self.key = key
        self.model = model
        self.tokenizer = tokenizer
        self.embed_dim = embed_dim
        self.device = torch.device(key.device)
        open_clip = _open_clip()
        self.preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(model))
        cfg = self.preprocess_cfg
        transform = open_clip.image_transform(
            cfg["size"],
            is_train=False,
            mean=cfg["mean"],
            std=cfg["std"],
            resize_mode=cfg["resize_mode"],
            interpolation=cfg["interpolation"],
            fill_color=cfg["fill_color"],
        )
        from torchvision.transforms import Compose, Normalize, ToTensor

        self.preprocess = transform  # open_clip's own: PIL image -> float tensor
        *geometric, to_tensor, normalize = transform.transforms
        if not (isinstance(to_tensor, ToTensor) and isinstance(normalize, Normalize)):
            raise RuntimeError(
                f"Unexpected open_clip preprocessing {transform}: sklearn-cmm expects it "
                "to end with ToTensor and Normalize."
            )
        # Resizing and cropping run on the decoding threads and give uint8 images; the
        # float conversion and normalisation (the rest of the transform, same arithmetic)
        # run batched on the device, which moves 4x fewer bytes than float images.
        self.geometric = Compose(geometric)
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(normalize.mean, dtype=torch.float32, device=self.device)
        self.mean = self.mean.reshape(shape)
        self.std = torch.tensor(normalize.std, dtype=torch.float32, device=self.device)
        self.std = self.std.reshape(shape)
        size = cfg["size"]
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        # Text encoding may swap text_projection out for a moment (pre-projection features).
        self.text_lock = threading.Lock()

    def prepare(self, image):
        """A PIL RGB image resized and cropped as the model expects: uint8 ``(H, W, 3)``."""
        return np.asarray(self.geometric(image), dtype=np.uint8)

    def encode_images(self, batch, precision):
        """Image embeddings of a uint8 ``(n, H, W, 3)`` CPU tensor, float32 on the device.

        Call inside ``torch.inference_mode()``.
        """
        x = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).contiguous()
        x = x.float().div_(255).sub_(self.mean).div_(self.std)
        with autocast(self.device, precision):
            return self.model.encode_image(x).float()

    def text_projection(self):
        """The text tower's projection matrix ``(width, embed_dim)`` as a tensor."""
        projection = getattr(_text_tower(self.model), "text_projection", None)
        if not isinstance(projection, torch.Tensor) or projection.ndim != 2:
            raise ValueError(
                f"The text tower of CLIP model {self.key.name!r} has no plain text_projection "
                f"matrix (it has {type(projection).__name__}), so it has no pre-projection "
                "text features or projection matrix to give."
            )
        return projection

    def encode_texts(self, texts, *, precision, batch_size, projected):
        """Text features of ``texts`` (float32 array), memoised per model and precision."""
        texts = list(texts)
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise ValueError(f"Texts to encode must be strings; got {bad[:3]!r}.")
        memo_key = (self.key, precision, projected)
        with _LOCK:
            known = {t: _TEXT_MEMO[(*memo_key, t)] for t in texts if (*memo_key, t) in _TEXT_MEMO}
            for t in known:
                _TEXT_MEMO.move_to_end((*memo_key, t))
        todo = list(dict.fromkeys(t for t in texts if t not in known))
        if todo:
            encoded = self._run_text_tower(todo, precision, batch_size, projected)
            with _LOCK:
                for text, row in zip(todo, encoded):
                    known[text] = _TEXT_MEMO[(*memo_key, text)] = row
                while len(_TEXT_MEMO) > _MAX_MEMO_TEXTS:
                    _TEXT_MEMO.popitem(last=False)
        if not texts:
            width = self.embed_dim if projected else self.text_projection().shape[0]
            return np.empty((0, width), dtype=np.float32)
        return np.stack([known[t] for t in texts])

    def _run_text_tower(self, texts, precision, batch_size, projected):
        tower = _text_tower(self.model)
        projection = None if projected else self.text_projection()
        rows = []
        with self.text_lock, torch.inference_mode(), autocast(self.device, precision):
            try:
                if projection is not None:
                    # The model's own encode_text skips the projection when it is None,
                    # which gives the pooled features it would have projected.
                    tower.text_projection = None
                for start in range(0, len(texts), batch_size):
                    tokens = self.tokenizer(texts[start : start + batch_size])
                    features = self.model.encode_text(tokens.to(self.device))
                    rows.append(features.float().cpu().numpy())
            finally:
                if projection is not None:
                    tower.text_projection = projection
        return np.concatenate(rows)


def _load(key, cache_dir):
    open_clip = _open_clip()
    name = key.name
    if key.source == "tag":
        tag_cfg = open_clip.get_pretrained_cfg(name, key.weights)
        checkpoint = _tag_checkpoint(name, key.weights, tag_cfg, cache_dir)
        preprocess = {k: tag_cfg[k] for k in _PREPROCESS_KEYS if k in tag_cfg}
        quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    elif key.source == "file":
        checkpoint = key.weights
        preprocess, quick_gelu = _local_checkpoint_settings(name)
    else:
        checkpoint = None
        preprocess, quick_gelu = dict(_CONFIG_PREPROCESS.get(name, {})), False
    # Random weights are seeded, without touching the global RNG, so that a pickled
    # featurizer with pretrained=None gives the same features after reloading.
    seeded = torch.random.fork_rng(devices=[]) if checkpoint is None else nullcontext()
    with seeded:
        if checkpoint is None:
            torch.manual_seed(0)
        model = open_clip.create_model(
            name,
            pretrained=checkpoint,
            precision="fp32",
            device=torch.device(key.device),
            force_quick_gelu=quick_gelu,
            force_preprocess_cfg=preprocess,
            pretrained_text=False,  # pretrained=None means random weights, nothing fetched
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
        )
    model.eval()
    model.requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(name)
    embed_dim = int(open_clip.get_model_config(name)["embed_dim"])
    return _LoadedModel(key, model, tokenizer, embed_dim)


def load_model(model, pretrained, *, device="auto", cache_dir=None):
    """The loaded CLIP model for this spec, from the process-wide cache or loaded now.

    Parameters
    ----------
    model : str or path-like
        Model name, bundled model name or ``.json`` config path.
    pretrained : str, path-like or None
        Pretrained tag, checkpoint file, ``"bundled"`` or None (seeded random weights).
    device : str or torch.device, default="auto"
        Where the model runs.
    cache_dir : str, path-like or None, default=None
        Where pretrained tags are looked up and downloaded.

    Returns
    -------
    _LoadedModel
    """
    name = model_name(model)
    source, weights = _weights_source(name, pretrained)
    key = _ModelKey(name, source, weights, str(_canonical_device(device)))
    with _LOCK:
        if key in _MODEL_CACHE:
            _MODEL_CACHE.move_to_end(key)
            return _MODEL_CACHE[key]
        loaded = _load(key, cache_dir)
        _MODEL_CACHE[key] = loaded
        while len(_MODEL_CACHE) > _MAX_CACHED_MODELS:
            _MODEL_CACHE.popitem(last=False)
        return loaded


def clear_model_cache():
    """Forget every loaded model and memoised text feature of this process."""
    with _LOCK:
        _MODEL_CACHE.clear()
        _TEXT_MEMO.clear()


class CLIPTextEncoder:
    """The text side of a CLIP model, for the classifiers' ``text_encoder`` parameter.

    A light, picklable description of a model: the weights are looked up in (or loaded
    into) the process-wide cache when text is encoded, so a featurizer and an encoder
    with the same model share one copy, and copying the encoder (as ``clone`` does) is
    cheap. Encoded prompts are memoised per model, so refits do not run the text tower
    again.

    Parameters
    ----------
    model : str or path-like, default="ViT-B-16"
        open_clip model name, bundled model name or path of a ``.json`` model config.
    pretrained : str, path-like or None, default="openai"
        open_clip pretrained tag, local checkpoint file, ``"bundled"`` or None (random
        weights).
    device : str or torch.device, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:N]"``.
    precision : {"auto", "fp32", "fp16", "bf16"}, default="auto"
        ``"auto"`` is fp32 on CPU and AMP (bf16, else fp16) on CUDA.
    cache_dir : str, path-like or None, default=None
        Where pretrained tags are looked up and downloaded.
    batch_size : int, default=256
        Prompts per forward pass of the text tower.

    See Also
    --------
    sklearn_cmm.CLIPFeaturizer : The image side; ``CLIPFeaturizer.text_encoder()`` gives
        the encoder of the same model.

    Examples
    --------
    >>> from sklearn_cmm import CLIPTextEncoder
    >>> CLIPTextEncoder("ViT-B-32", pretrained="laion2b_s34b_b79k")
    CLIPTextEncoder(model='ViT-B-32', pretrained='laion2b_s34b_b79k')
    """

    # Keyword arguments left out of the repr when they have these values.
    _DEFAULTS = {"device": "auto", "precision": "auto", "cache_dir": None, "batch_size": 256}

    def __init__(
        self,
        model="ViT-B-16",
        pretrained="openai",
        *,
        device="auto",
        precision="auto",
        cache_dir=None,
        batch_size=256,
    ):
        self.model = model
        self.pretrained = pretrained
        self.device = device
        self.precision = precision
        self.cache_dir = cache_dir
        self.batch_size = batch_size

    def _spec(self):
        return (
            os.fspath(self.model),
            None if self.pretrained is None else os.fspath(self.pretrained),
            str(self.device),
            self.precision,
            None if self.cache_dir is None else os.fspath(self.cache_dir),
            self.batch_size,
        )

    def __eq__(self, other):
        return type(other) is type(self) and other._spec() == self._spec()

    def __hash__(self):
        return hash(self._spec())

    def __repr__(self):
        args = [f"model={self.model!r}", f"pretrained={self.pretrained!r}"]
        args += [
            f"{name}={getattr(self, name)!r}"
            for name, default in self._DEFAULTS.items()
            if getattr(self, name) != default
        ]
        return f"{type(self).__name__}({', '.join(args)})"

    def _loaded(self):
        return load_model(
            self.model, self.pretrained, device=self.device, cache_dir=self.cache_dir
        )

    def _encode(self, texts, projected):
        loaded = self._loaded()
        return loaded.encode_texts(
            texts,
            precision=resolve_precision(self.precision, loaded.device),
            batch_size=self.batch_size,
            projected=projected,
        )

    @property
    def embed_dim(self):
        """Dimension of the text (and image) embeddings, from the model config."""
        return embed_dim_of(self.model)

    def encode_text(self, texts):
        """Projected text embeddings (not normalised).

        Parameters
        ----------
        texts : list of str

        Returns
        -------
        features : ndarray of shape (n_texts, embed_dim), dtype float32
        """
        return self._encode(texts, projected=True)

    def encode_text_pre_projection(self, texts):
        """Pooled text features before ``text_projection``.

        ``encode_text_pre_projection(texts) @ text_projection == encode_text(texts)`` up to
        rounding.

        Parameters
        ----------
        texts : list of str

        Returns
        -------
        features : ndarray of shape (n_texts, width), dtype float32
        """
        return self._encode(texts, projected=False)

    @property
    def text_projection(self):
        """The text projection matrix, ndarray of shape (width, embed_dim), float32."""
        return self._loaded().text_projection().detach().float().cpu().numpy()


def record_featurizer_use(encoder, embed_dim):
    """Note that a featurizer used the model of ``encoder`` (see default_text_encoder)."""
    with _LOCK:
        _RECENT_FEATURIZERS[encoder] = embed_dim
        _RECENT_FEATURIZERS.move_to_end(encoder)
        while len(_RECENT_FEATURIZERS) > _MAX_RECENT_FEATURIZERS:
            _RECENT_FEATURIZERS.popitem(last=False)


def default_text_encoder(n_features):
    """The text encoder that a classifier's ``text_encoder="clip"`` stands for.

    The model most recently used (fit, transform or unpickled when fitted) by a
    :class:`~sklearn_cmm.CLIPFeaturizer` in this process whose embedding dimension is
    ``n_features``; if there is none, the featurizer's default model.

    Parameters
    ----------
    n_features : int
        Dimension of the image features the classifier is fitted on.

    Returns
    -------
    CLIPTextEncoder

    Raises
    ------
    ValueError
        If no such model has ``n_features`` dimensions: image and text features would
        come from different models.
    """
    with _LOCK:
        recent = list(reversed(_RECENT_FEATURIZERS.items()))
    for encoder, dim in recent:
        if dim == n_features:
            return encoder
    default = CLIPTextEncoder()
    if default.embed_dim == n_features:
        return default
    used = ", ".join(f"{enc.model!r} ({dim})" for enc, dim in recent)
    raise ValueError(
        f"The image features have {n_features} dimensions but no CLIP model used by a "
        f"CLIPFeaturizer in this process has that dimension "
        f"({'models used: ' + used if used else 'none was used'}), and the default "
        f"{default.model!r} has {default.embed_dim}: the image and text features would "
        "come from different models. Pass text_encoder=CLIPTextEncoder(model=..., "
        "pretrained=...) with the model that made the features, or text_features=..."
    )
