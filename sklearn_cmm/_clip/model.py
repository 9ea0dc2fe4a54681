"""Loaded CLIP models: the process-wide cache, image and text encoding, precision.

A loaded model is kept in a small process-wide cache keyed by the weights and device, so
that a pipeline's featurizer and classifier share one copy. The cache only saves loading
time: what a model computes depends on its name and weights alone. Precision is not part
of the key: weights stay in float32 and fp16/bf16 run as autocast (AMP).
"""

import os
import threading
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from .._torch import resolve_device
from .config import (PRECISIONS, PREPROCESS_KEYS, config_preprocess, config_version, file_version,
                     model_name, open_clip_module)
from .weights import local_checkpoint_settings, tag_checkpoint, weights_source

_AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

# Models kept loaded at once: enough for a featurizer and a classifier on one model while
# a grid search compares a couple of others, without holding every model ever used.
_MAX_CACHED_MODELS = 3

# Encoded prompts remembered per model, so that refits (grid search) skip the text tower.
_MAX_MEMO_TEXTS = 20_000

_LOCK = threading.RLock()
_MODEL_CACHE = OrderedDict()  # ModelKey -> LoadedModel
_TEXT_MEMO = OrderedDict()  # (ModelKey, precision, projected, text) -> float32 row


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
class ModelKey:
    """Identity of loaded weights: model name, where the weights come from, device, and
    the versions of the files they were read from (an edited config or a checkpoint
    saved again at the same path is another model)."""

    name: str
    source: str  # "tag", "file" or "random"
    weights: str | None  # the tag, the resolved file path, or None
    device: str
    versions: tuple  # file_version of the config (None: open_clip's) and of the weights file


def model_key(model, pretrained, device="cpu"):
    """The :class:`ModelKey` of a model spec; reads configs, loads no weights."""
    name = model_name(model)
    source, weights = weights_source(name, pretrained)
    versions = (config_version(name), file_version(weights) if source == "file" else None)
    return ModelKey(name, source, weights, str(_canonical_device(device)), versions)


def _text_tower(model):
    """The module holding the text tower's ``text_projection``."""
    return getattr(model, "text", model)


class LoadedModel:
    """An open_clip model in eval mode with its preprocessing, tokenizer and metadata."""

    def __init__(self, key, model, tokenizer, embed_dim):
        self.key = key
        self.model = model
        self.tokenizer = tokenizer
        self.embed_dim = embed_dim
        self.device = torch.device(key.device)
        self._image_multiply_adds = None  # counted on first use (image_multiply_adds)
        self._count_lock = threading.Lock()
        open_clip = open_clip_module()
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

    def image_multiply_adds(self):
        """Multiply-adds of the image tower's forward pass on one image, counted once.

        torch's ``FlopCounterMode`` counts a forward of a blank image (on one thread):
        the tower's weights alone undercount it by the tokens or positions each weight
        meets (ViT-B-16: 86 million weights, 17 billion multiply-adds), and the CPU
        threads are sized from it.
        """
        with self._count_lock:  # one count, however many featurizers ask at once
            if self._image_multiply_adds is None:
                from torch.utils.flop_counter import FlopCounterMode

                from .._threads import sized_threads

                counter = FlopCounterMode(display=False)
                # An input that requires grad keeps attention off its fused inference
                # kernel, which the counter does not see (a third of a ViT's products).
                blank = torch.zeros((1, 3, *self.image_size), device=self.device,
                                    requires_grad=True)
                with sized_threads(0, n_jobs=1), torch.enable_grad(), counter:
                    self.model.encode_image(blank)
                self._image_multiply_adds = counter.get_total_flops() // 2
            return self._image_multiply_adds

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
        with self.text_lock:  # not while a text encoding has it swapped out
            return self._text_projection()

    def _text_projection(self):
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
        if isinstance(texts, str):  # list() would split it into characters
            raise ValueError(f"Texts to encode must be a list of strings; got one string, "
                             f"{texts[:40]!r}: pass [text].")
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
        rows = []
        with self.text_lock, torch.inference_mode(), autocast(self.device, precision):
            projection = None if projected else self._text_projection()
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
    open_clip = open_clip_module()
    name = key.name
    if key.source == "tag":
        tag_cfg = open_clip.get_pretrained_cfg(name, key.weights)
        checkpoint = tag_checkpoint(name, key.weights, tag_cfg, cache_dir)
        preprocess = {k: tag_cfg[k] for k in PREPROCESS_KEYS if k in tag_cfg}
        quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    elif key.source == "file":
        checkpoint = key.weights
        preprocess, quick_gelu = local_checkpoint_settings(name)
    else:
        checkpoint = None
        preprocess, quick_gelu = dict(config_preprocess(name) or {}), False
    # Random weights are seeded, without touching the global RNG, so that a pickled
    # featurizer with pretrained=None gives the same features after reloading.
    seeded = torch.random.fork_rng(devices=[]) if checkpoint is None else nullcontext()
    with seeded:
        if checkpoint is None:
            torch.manual_seed(0)
        try:
            model = open_clip.create_model(
                name,
                pretrained=checkpoint,
                precision="fp32",
                device=torch.device(key.device),
                force_quick_gelu=quick_gelu,
                force_preprocess_cfg=preprocess,
                pretrained_text=False,  # pretrained=None: random weights, nothing fetched
                cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            )
        except Exception as exc:
            if checkpoint is None:
                raise
            # open_clip and safetensors report a foreign or corrupt file with whatever
            # error the first mismatching tensor raises (AssertionError, RuntimeError,
            # SafetensorError, KeyError, ...): say which file and which model instead.
            raise ValueError(
                f"Cannot load the checkpoint {str(checkpoint)!r} into CLIP model "
                f"{name!r}: the file is not a state dict of this architecture, or it is "
                f"corrupt ({type(exc).__name__}: {exc}). Pass the model name (or .json "
                "config) that the checkpoint was trained with."
            ) from exc
    model.eval()
    model.requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(name)
    embed_dim = int(open_clip.get_model_config(name)["embed_dim"])
    return LoadedModel(key, model, tokenizer, embed_dim)


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
    LoadedModel
    """
    key = model_key(model, pretrained, device)
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

