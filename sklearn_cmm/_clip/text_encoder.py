"""CLIPTextEncoder: the text side of a CLIP model, as a light picklable description.

Importing this module loads neither torch nor open_clip: they load when text is encoded.
"""

import os
from numbers import Integral

#: The CLIP model of ``CLIPFeaturizer()`` and ``CLIPTextEncoder()`` at their defaults, so
#: that a classifier's ``text_encoder="clip"`` encodes text with the model that
#: ``make_pipeline(CLIPFeaturizer(), classifier)`` embeds images with.
DEFAULT_MODEL = "ViT-B-16"
DEFAULT_PRETRAINED = "openai"


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
        model=DEFAULT_MODEL,
        pretrained=DEFAULT_PRETRAINED,
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
        from .model import load_model

        return load_model(
            self.model, self.pretrained, device=self.device, cache_dir=self.cache_dir
        )

    def same_weights(self, other):
        """Whether ``other`` (a CLIPTextEncoder) names the same model and weights.

        Names are resolved (a bundled or ``.json`` model, a checkpoint path written two
        ways), device and precision are not compared; no weights are loaded.
        """
        from .model import model_key

        mine = model_key(self.model, self.pretrained)
        theirs = model_key(other.model, other.pretrained)
        return (mine.name, mine.source, mine.weights) == (
            theirs.name,
            theirs.source,
            theirs.weights,
        )

    def _encode(self, texts, projected):
        from .model import resolve_precision

        if not isinstance(self.batch_size, Integral) or self.batch_size < 1:
            raise ValueError(
                f"batch_size must be a positive integer; got {self.batch_size!r}.")
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
        from .config import embed_dim_of

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
        """The text projection matrix, ndarray of shape (width, embed_dim), float32.

        A copy: on the CPU the tensor's own memory is the cached model's weights, which
        every encoder and featurizer of the model in this process shares.
        """
        return self._loaded().text_projection().detach().float().cpu().numpy().copy()
