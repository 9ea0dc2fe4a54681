"""CLIPFeaturizer: images in, CLIP image embeddings out, as a scikit-learn transformer."""

import os
import threading
from collections import deque
from contextlib import nullcontext
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral

import numpy as np
from PIL import Image, ImageOps
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._augment import AUGMENTATIONS, augmented_view, view_generators
from ._clip.config import PRECISIONS
from ._clip.text_encoder import DEFAULT_MODEL, DEFAULT_PRETRAINED, CLIPTextEncoder
from ._device import check_device
from ._embeddings import CLIPEmbeddings
from ._threads import available_cores, sized_threads, threads_for

# Decoding threads when num_workers=None: enough to keep a GPU fed, capped because each
# thread holds decoded images in memory.
_MAX_AUTO_WORKERS = 8


class CLIPFeaturizer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Embed images with a CLIP image encoder.

    ``fit`` loads the model (``__init__`` only stores the parameters, so the featurizer
    can be cloned and grid-searched); ``transform`` decodes and preprocesses the images
    on a pool of threads while the model encodes earlier batches, and returns one
    embedding per image, in order. Each image goes through the model's own preprocessing
    (resize, crop, normalisation), as for open_clip's ``encode_image``.

    The embeddings come as :class:`~sklearn_cmm.CLIPEmbeddings`, a numpy array that
    records this model, so that a classifier whose text would come from another model
    raises instead of silently mixing the two (``make_pipeline(CLIPFeaturizer(),
    classifier)`` works as it is: both default to the same model; for another model use
    :func:`~sklearn_cmm.make_clip_pipeline` or ``text_encoder=featurizer.text_encoder()``).

    The weights load lazily, at the first ``fit`` or ``transform``: a wrong
    ``pretrained`` is reported there, as scikit-learn validates parameters at fit. Loaded
    models live in a process-wide cache keyed by model, weights and device, so a
    pipeline's featurizer and the text side of its classifier share one copy, and a
    pickled featurizer holds no weights: they are loaded again when it is next used.

    Parameters
    ----------
    model : str or path-like, default="ViT-B-16"
        An open_clip model name (``open_clip.list_models()``), the name of a model bundled
        with sklearn-cmm, or the path of a ``.json`` open_clip model config (its file
        name becomes the model name; it may carry a ``preprocess_cfg``).

    pretrained : str, path-like or None, default="openai"
        The weights: an open_clip pretrained tag of ``model`` (looked up in the local
        cache, downloaded only when a network is reachable), the path of a local
        checkpoint (``.safetensors``, ``.bin``, ``.pt``), ``"bundled"`` for the weights
        bundled with ``model``, or None for seeded random weights (benchmarks, tests).

    device : str or torch.device, default="auto"
        ``"auto"`` (the first GPU when CUDA is available, else the CPU), ``"cpu"`` or
        ``"cuda[:N]"``.

    precision : {"auto", "fp32", "fp16", "bf16"}, default="auto"
        ``"auto"`` is fp32 on CPU and automatic mixed precision on CUDA (bf16 where
        supported, else fp16). The embeddings are float32 in every case.

    batch_size : int, default=64
        Images per forward pass.

    num_workers : int or None, default=None
        Threads that decode and preprocess images while the model runs; 0 decodes on the
        calling thread between batches. None uses ``min(8, cores)`` with a GPU, and on
        the CPU the cores the model's threads leave (at least 1, at most 8).

    n_jobs : int or None, default=None
        Torch's intra-op threads of the model on the CPU during ``transform`` (joblib's
        meaning: ``-1`` every core); restored afterwards. None sizes them to the model:
        one thread per ``1e9`` multiply-adds of a batch (the image tower's on one image,
        counted once per loaded model, times the images of a batch): one thread for the
        bundled tiny model (14 million an image), every core for RN50 and ViT-B-16 (6 and
        17 billion). Ignored on a GPU.

    normalize : bool, default=True
        L2-normalise each embedding.

    cache_dir : str, path-like or None, default=None
        Where pretrained tags are looked up and downloaded (the Hugging Face hub cache
        by default).

    train_views : int, default=0
        Augmented views of each image that :meth:`fit_transform` (the training images of
        a pipeline) embeds with it; :meth:`transform` never augments. 0 embeds the images
        as they are. See *Augmented views* below.

    augmentation : {"crop_flip", "flip"} or callable, default="crop_flip"
        How a view is drawn: ``"crop_flip"`` crops a random box of 50-100 % of the
        image's area and aspect ratio 3/4 to 4/3, resizes it back to the image's size
        (scaled down to a shorter side of twice the model's input, which the model's own
        resize shrinks further) and mirrors it with probability 1/2 (the views of
        Tip-Adapter's and CoOp's few-shot training); ``"flip"`` is the mirror image (one view, so
        ``train_views=1``); a callable ``augmentation(image, rng)`` takes an RGB PIL
        image and a :class:`numpy.random.Generator` and returns a PIL image.

    view_output : {"mean", "columns"}, default="mean"
        With ``train_views=k``: ``"mean"`` averages each image's ``k + 1`` embeddings
        into one row of ``embed_dim_`` features, for any classifier; ``"columns"`` puts
        them side by side, ``(k + 1) * embed_dim_`` features, for the package's
        classifiers with ``n_views=k + 1`` (every view a shot).

    random_state : int, RandomState instance or None, default=None
        Seeds the views' draws; the same value gives the same views whatever the
        number of decoding threads.

    verbose : bool or int, default=False
        Show a progress bar over the images (views included).

    Attributes
    ----------
    embed_dim_ : int
        Dimension of the embeddings: the number of output features, times ``train_views
        + 1`` in the output of ``fit_transform`` with ``view_output="columns"``.

    image_size_ : tuple of int
        ``(height, width)`` the images are resized and cropped to.

    preprocess_cfg_ : dict
        The model's preprocessing: ``size``, ``mode``, ``mean``, ``std``,
        ``interpolation``, ``resize_mode`` and ``fill_color``.

    See Also
    --------
    sklearn_cmm.CLIPTextEncoder : The text side of the same model
        (see :meth:`text_encoder`).
    sklearn_cmm.ZeroShotClassifier : Classifies the embeddings with class names alone.

    Notes
    -----
    Inputs may be image file paths (``str`` or ``pathlib.Path``), PIL images or arrays
    of shape ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``; grayscale and
    RGBA images are converted to RGB first (the alpha channel is dropped).

    * Orientation: files and PIL images are turned upright by their EXIF orientation tag
      (as photo viewers show them; phone cameras store photos sideways with a tag).
    * Bit depth: uint8 arrays and 8-bit images are used as they are. uint16 arrays and
      16-bit images (PIL modes ``I;16*``, and mode ``I``, Pillow's mode for 16-bit files
      of some formats, whose values must then lie in [0, 65535]) are divided by 257, so
      that 65535 is white. Float arrays and float images (mode ``F``, e.g. float TIFFs)
      are read as intensities in [0, 1] and multiplied by 255; values outside [0, 1], NaN
      or inf are an error (scale such images yourself). Other dtypes are an error.
      Values are rounded to 8 bits, the model's input precision.
    * A 3-D array ``X`` is a batch of grayscale images ``(n_images, H, W)``; one whose
      last dimension is 1, 3 or 4 is an error, since it reads as one image ``(H, W, C)``
      as well: pass a single image as ``[image]`` and color batches as 4-D arrays.

    *Augmented views.* With ``train_views=k``, :meth:`fit_transform` embeds each image
    and ``k`` augmented views of it (drawn after the EXIF and bit-depth handling, before
    the model's resize and crop), L2-normalises the ``k + 1`` embeddings when
    ``normalize=True``, and returns one row per image, as scikit-learn's contract asks:
    with ``view_output="mean"`` their mean, normalised again (Tip-Adapter averages its
    cache keys over views so), with ``"columns"`` the image's own embedding followed by
    its views', which the package's classifiers with ``n_views=k + 1`` take as ``k + 1``
    shots (SeMoBridge-T's authors append views as extra shots so); :meth:`transform` then
    repeats each image's own embedding ``k + 1`` times, so that the classifier sees the
    same columns, and predicts from the first. So, as for
    :class:`~sklearn.preprocessing.TargetEncoder`, ``fit_transform(X)`` differs from
    ``fit(X).transform(X)``: call :meth:`fit_transform` on training images (a
    :class:`~sklearn.pipeline.Pipeline` does), :meth:`transform` on the images to
    classify. A fit costs ``k + 1`` embeddings per image. The user guide (*Augmented
    views*) has what they did on the bundled models.

    An image that cannot be read or decoded, an empty (0-pixel) image or an invalid
    array is an error naming the item (``X[i]``, and the file when known), never
    skipped, so that rows stay aligned with ``y``.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn_cmm import CLIPFeaturizer, ZeroShotClassifier
    >>> clf = make_pipeline(CLIPFeaturizer(), ZeroShotClassifier())  # doctest: +SKIP
    >>> clf.fit(["cat1.jpg", "dog1.jpg"], ["cat", "dog"])  # doctest: +SKIP
    >>> clf.predict(["unknown.jpg"])  # doctest: +SKIP
    array(['cat'], dtype='<U3')
    """

    _parameter_constraints = {
        "model": [str, os.PathLike],
        "pretrained": [str, os.PathLike, None],
        "device": "no_validation",  # check_device, in fit
        "precision": [StrOptions(set(PRECISIONS))],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "num_workers": [Interval(Integral, 0, None, closed="left"), None],
        "n_jobs": [Interval(Integral, 1, None, closed="left"),
                   Interval(Integral, None, -1, closed="right"), None],
        "normalize": ["boolean"],
        "cache_dir": [str, os.PathLike, None],
        "train_views": [Interval(Integral, 0, None, closed="left")],
        "augmentation": [StrOptions(set(AUGMENTATIONS)), callable],
        "view_output": [StrOptions({"mean", "columns"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        model=DEFAULT_MODEL,
        *,
        pretrained=DEFAULT_PRETRAINED,
        device="auto",
        precision="auto",
        batch_size=64,
        num_workers=None,
        n_jobs=None,
        normalize=True,
        cache_dir=None,
        train_views=0,
        augmentation="crop_flip",
        view_output="mean",
        random_state=None,
        verbose=False,
    ):
        self.model = model
        self.pretrained = pretrained
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.n_jobs = n_jobs
        self.normalize = normalize
        self.cache_dir = cache_dir
        self.train_views = train_views
        self.augmentation = augmentation
        self.view_output = view_output
        self.random_state = random_state
        self.verbose = verbose

    def _loaded_model(self):
        from ._clip.model import load_model

        return load_model(self.model, self.pretrained, device=self.device, cache_dir=self.cache_dir)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Load the CLIP model; ``X`` and ``y`` are not used.

        Parameters
        ----------
        X : ignored
            Present for the scikit-learn API.
        y : ignored
            Present for the scikit-learn API.

        Returns
        -------
        self : object
            The fitted featurizer.
        """
        check_device(self.device)
        if self.augmentation == "flip" and self.train_views > 1:
            raise ValueError(
                f"augmentation='flip' gives one view of an image (its mirror image), so "
                f"train_views={self.train_views} would embed the same view "
                f"{self.train_views} times; use train_views=1, or 'crop_flip'."
            )
        loaded = self._loaded_model()
        self.embed_dim_ = loaded.embed_dim
        self.image_size_ = loaded.image_size
        self.preprocess_cfg_ = dict(loaded.preprocess_cfg)
        return self

    def fit_transform(self, X, y=None):
        """Load the model and embed each image of ``X`` with its augmented views.

        With ``train_views=0`` this is ``fit(X).transform(X)``. Otherwise each row holds
        the image's embedding and those of ``train_views`` augmented views of it,
        averaged or side by side (``view_output``, see Notes), so that a :class:`~sklearn.pipeline.Pipeline` fits its classifier on
        augmented training images and predicts from plain ones.

        Parameters
        ----------
        X : sequence of str, path-like, PIL images or arrays, or ndarray
            The training images, as for :meth:`transform`.
        y : ignored
            Present for the scikit-learn API.

        Returns
        -------
        X_new : CLIPEmbeddings of shape (n_images, n_features_out), dtype float32
            One row per image: ``embed_dim_`` features, or ``(train_views + 1) *
            embed_dim_`` with ``view_output="columns"``; each embedding L2-normalised
            when ``normalize=True``.
        """
        return self.fit(X, y)._embed(X, self.train_views)

    def transform(self, X):
        """Embed each image of ``X``.

        Parameters
        ----------
        X : sequence of str, path-like, PIL images or arrays, or ndarray
            A list, tuple, 1-D array or pandas Series of images (file paths, PIL images
            or arrays), a one-column DataFrame of them, or an array of shape
            ``(n_images, H, W)`` (``W`` not 1, 3 or 4) or ``(n_images, H, W, C)`` with
            ``C`` in 1, 3, 4 (see Notes for bit depths).

        Returns
        -------
        X_new : CLIPEmbeddings of shape (n_images, n_features_out), dtype float32
            The image embeddings, L2-normalised when ``normalize=True``: a numpy array
            that records this featurizer's model (``X_new.text_encoder``). With
            ``train_views=k`` and ``view_output="columns"``, each embedding ``k + 1``
            times side by side.

        Raises
        ------
        ValueError
            If an image file is missing or cannot be decoded, an image is empty or an
            array invalid (the message names the item, ``X[i]``, and its file), or if
            an item is not an image.
        """
        return self._embed(X, 0)

    def _embed(self, X, n_views, first_image=0):
        """Embeddings of ``X`` with ``n_views`` augmented views of each image (see
        ``view_output``; 0: none, side by side repeated as ``transform`` does); ``X`` is
        images ``first_image ..`` of a longer list, whose views they get
        (:func:`~sklearn_cmm._augment.view_generators`)."""
        import torch
        import torch.nn.functional as F

        from ._clip.model import resolve_precision

        check_is_fitted(self)
        images = _image_items(X)
        # One task per embedding: each image, then its views, each view with its own
        # generator, so that the draws do not depend on the decoding threads' order.
        items = [(index, None) for index in range(len(images))]
        if n_views:
            generators = view_generators(self.random_state, len(images), n_views, first_image)
            items = [(index, rng) for index, views in enumerate(generators)
                     for rng in [None, *views]]
        loaded = self._loaded_model()
        precision = resolve_precision(self.precision, loaded.device)
        on_cpu = loaded.device.type == "cpu"
        if on_cpu:  # threads for the multiply-adds of a batch
            work = loaded.image_multiply_adds() * min(self.batch_size, len(items))
            model_threads = threads_for(work, self.n_jobs)
        else:
            model_threads = 0
        n_workers = self.num_workers
        if n_workers is None:  # on the CPU, decoding takes the cores the model leaves
            n_workers = min(_MAX_AUTO_WORKERS, max(available_cores() - model_threads, 1))

        # A PIL image decodes lazily from its open file, which is not safe to read from
        # two threads: the tasks of one such image (the object twice in X) take turns
        # decoding it.
        decode_locks = {id(image): threading.Lock() for image in images
                        if isinstance(image, Image.Image)}

        def rgb(image_index):
            item = images[image_index]
            with decode_locks.get(id(item), nullcontext()):
                return _as_rgb(item, image_index)

        # An image's k + 1 tasks share one decoding (a camera photo takes longer to
        # decode than to embed): the first to come decodes it, the last lets it go.
        shared = {}  # image index -> [its RGB image, tasks yet to take it]
        share_locks = [threading.Lock() for _ in images] if n_views else []

        def shared_rgb(image_index):
            with share_locks[image_index]:
                entry = shared.get(image_index)
                if entry is None:
                    entry = shared[image_index] = [rgb(image_index), n_views + 1]
                entry[1] -= 1
                if entry[1] == 0:
                    del shared[image_index]
                return entry[0]

        # A crop is resized to at most twice the model's input (a 12-megapixel photo's
        # crop resized back to full size took 0.22 s, to 597 x 448 0.05 s): the model's
        # own resize still shrinks it.
        max_short_side = 2 * max(loaded.image_size)

        def prepare(index):
            image_index, rng = items[index]
            if not n_views:
                return loaded.prepare(rgb(image_index))
            image = shared_rgb(image_index)
            if rng is not None:
                image = augmented_view(image, self.augmentation, rng, max_short_side)
            return loaded.prepare(image)

        batches = _prepared_batches(
            range(len(items)), prepare, self.batch_size, n_workers, pin=loaded.device.type == "cuda"
        )
        features = []
        with (
            tqdm(total=len(items), desc="CLIP features", unit="img", disable=not self.verbose) as bar,
            torch.inference_mode(),
            sized_threads(work, self.n_jobs) if on_cpu else nullcontext(),
        ):
            for batch in batches:
                # Outputs stay on the device: one synchronisation at the end instead of one
                # a batch, so a GPU runs while the next batch is decoded.
                features.append(loaded.encode_images(batch, precision))
                bar.update(len(batch))
            features = torch.cat(features)
            if self.normalize:
                features = F.normalize(features, dim=-1)
            views = None
            if self.view_output == "columns" and self.train_views:
                views = (1 + self.train_views, features.shape[1])
                # transform's images stand for all their views: the classifier predicts
                # from the first of the columns fit_transform's views fill.
                features = (features.reshape(len(images), -1) if n_views
                            else features.repeat(1, views[0]))
            elif n_views:
                features = features.view(len(images), 1 + n_views, -1).mean(dim=1)
                if self.normalize:
                    features = F.normalize(features, dim=-1)
        return CLIPEmbeddings(features.cpu().numpy(), self.text_encoder(), views)

    @property
    def _n_features_out(self):
        if self.view_output == "columns":
            return self.embed_dim_ * (1 + self.train_views)
        return self.embed_dim_

    def text_encoder(self):
        """The text encoder of this featurizer's CLIP model.

        Returns
        -------
        encoder : CLIPTextEncoder
            Encodes text with the same model, device and precision; no weights are
            loaded until it encodes.
        """
        return CLIPTextEncoder(
            self.model,
            self.pretrained,
            device=self.device,
            precision=self.precision,
            cache_dir=self.cache_dir,
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.one_d_array = True  # a list of paths or images
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True  # a batch of uint8 images
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []  # always float32 out
        tags.non_deterministic = self.train_views > 0 and self.random_state is None
        return tags


def _image_items(X):
    """``X`` as a list of images (paths, PIL images or arrays), one per output row."""
    if hasattr(X, "columns"):  # a DataFrame
        if X.shape[1] != 1:
            raise ValueError(
                f"A DataFrame X must have one column of images; it has {X.shape[1]}."
            )
        X = X.iloc[:, 0]
    if isinstance(X, (str, os.PathLike, Image.Image)):
        raise ValueError(
            f"X must be a sequence of images; got a single {type(X).__name__}. "
            "Wrap it in a list."
        )
    if isinstance(X, np.ndarray):
        if X.dtype.kind in "OUS" and X.ndim != 1:
            raise ValueError(f"An array X of image paths must be 1-D; got shape {X.shape}.")
        if X.dtype.kind not in "OUS" and X.ndim not in (3, 4):
            raise ValueError(
                "An image array X must have shape (n_images, H, W) or (n_images, H, W, C); "
                f"got shape {X.shape}. Pass a single image as a list: [image]."
            )
        if X.dtype.kind not in "OUS" and X.ndim == 3 and X.shape[2] in (1, 3, 4):
            raise ValueError(
                f"X has shape {X.shape}: one image of {X.shape[0]} x {X.shape[1]} pixels "
                f"with {X.shape[2]} channel(s), or {X.shape[0]} grayscale images of "
                f"{X.shape[1]} x {X.shape[2]} pixels? Pass one image as a list, [image], "
                "and a batch of color images as (n_images, H, W, C); grayscale images "
                f"{X.shape[2]} pixels wide go as a list of (H, W) arrays."
            )
    try:
        items = list(X)
    except TypeError as exc:
        raise ValueError(f"X must be a sequence of images; got {type(X).__name__}.") from exc
    if not items:
        raise ValueError("X contains no image.")
    for i, item in enumerate(items):
        if not isinstance(item, (str, os.PathLike, Image.Image, np.ndarray)):
            raise ValueError(
                f"X[{i}] is a {type(item).__name__}; images must be file paths, PIL "
                "images or arrays."
            )
    return items


def _as_rgb(item, index):
    """Image ``X[index]`` (a path, PIL image or array) as an upright RGB PIL image."""
    if isinstance(item, np.ndarray):
        try:
            return _rgb_of(Image.fromarray(_array_as_8bit(item)))
        except ValueError as exc:
            raise ValueError(f"X[{index}]: {exc}") from exc
    if isinstance(item, Image.Image):
        # A lazily opened image decodes here: a truncated file fails as a read error.
        where = f" (read from {item.filename!r})" if getattr(item, "filename", "") else ""
        what = f"Cannot decode X[{index}], a PIL image{where}"
        if getattr(item, "tile", None) and getattr(item, "fp", True) is None:
            # Pillow would fail on an assertion, which names nothing (or, under python
            # -O, on an attribute of None)
            raise ValueError(
                f"{what}: its file was closed before its pixels were read (opened in a "
                "`with Image.open(...)` block that has ended?); call image.load() inside "
                "the block, or pass the path.")
        opened = nullcontext(item)
    else:
        path = os.fspath(item)
        what = f"Cannot read image file {path!r} (X[{index}])"
        opened = _opened(path, what)
    try:
        with opened as image:
            # exif_transpose and _rgb_of decode the pixels, so a truncated file fails
            # here, inside the try, rather than later.
            return _rgb_of(ImageOps.exif_transpose(image))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{what}: {exc}") from exc


def _opened(path, what):
    try:
        return Image.open(path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{what}: {exc}") from exc


def _rgb_of(image):
    """A decoded PIL image as RGB, high bit depths scaled to 8 bits (see _array_as_8bit)."""
    if image.width == 0 or image.height == 0:
        raise ValueError(f"the image is empty ({image.width} x {image.height} pixels).")
    if image.mode in _HIGH_DEPTH_MODES:
        # convert("RGB") clips these modes at 255: a 16-bit image would come out white
        # and a float image in [0, 1] black. Scale them as arrays of the same values.
        image = Image.fromarray(_array_as_8bit(np.asarray(image), mode=image.mode))
    if image.mode == "La":  # premultiplied alpha: Pillow converts it only to "LA"
        image = image.convert("LA")
    return image if image.mode == "RGB" else image.convert("RGB")


#: PIL modes holding more than 8 bits a pixel: 16-bit integers, 32-bit integers, floats.
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _array_as_8bit(array, mode=None):
    """An image array (or a high-bit-depth PIL image's pixels) as a uint8 array.

    uint8 is kept; uint16 (and PIL's ``I;16`` modes) is divided by 257, so 65535 is 255;
    PIL's 32-bit mode ``I`` is read as 16-bit too (Pillow's mode for 16-bit files in some
    formats), its values in [0, 65535]; floats (and PIL's mode ``F``) must lie in [0, 1]
    and are multiplied by 255. Values are rounded to the nearest integer.
    """
    source = f"a mode-{mode} image" if mode else f"a {array.dtype} array"
    if array.dtype == np.uint8:
        scaled = array
    elif (array.dtype.kind == "u" and array.dtype.itemsize == 2) or mode == "I":
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(
                f"{source} is read as 16-bit (0-65535), but its values span "
                f"[{array.min()}, {array.max()}]."
            )
        scaled = np.round(array / 257.0)
    elif array.dtype.kind == "f":
        if not np.isfinite(array).all():
            problem = "it holds NaN or inf"
        elif array.size and (array.min() < 0 or array.max() > 1):
            problem = f"its values span [{array.min()}, {array.max()}]"
        else:
            problem = None
        if problem:
            raise ValueError(
                f"{source} is read as intensities in [0, 1], but {problem}. Scale it to "
                "[0, 1] (or to uint8) first."
            )
        scaled = np.round(array * 255.0)
    else:
        raise ValueError(
            f"Image arrays must be uint8 (0-255), uint16 (0-65535) or float (0-1); got "
            f"{array.dtype}. Convert with e.g. image.astype(np.uint8) if it holds 0-255 values."
        )
    if scaled.ndim == 3 and scaled.shape[2] == 1:
        scaled = scaled[:, :, 0]
    if not (scaled.ndim == 2 or (scaled.ndim == 3 and scaled.shape[2] in (3, 4))):
        raise ValueError(
            f"An image array must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); "
            f"got {array.shape}."
        )
    return np.ascontiguousarray(scaled, dtype=np.uint8)


def _prepared_batches(items, prepare, batch_size, n_workers, *, pin):
    """Yield uint8 tensors ``(n, H, W, 3)`` of ``prepare(item)``, in order.

    With workers, images are prepared on a thread pool (PIL decoding and resizing release
    the GIL) up to two batches ahead of the one being yielded, so that decoding overlaps
    the model while memory stays bounded.
    """
    n = len(items)
    if n_workers == 0:
        for start in range(0, n, batch_size):
            yield _stack([prepare(item) for item in items[start : start + batch_size]], pin)
        return
    lookahead = 2 * batch_size
    pool = ThreadPoolExecutor(n_workers, thread_name_prefix="clip-decode")
    pending = deque()
    submitted = 0
    try:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            while submitted < min(n, stop + lookahead):
                pending.append(pool.submit(prepare, items[submitted]))
                submitted += 1
            yield _stack([pending.popleft().result() for _ in range(stop - start)], pin)
    finally:
        # On an error (or an early stop) drop the images queued ahead.
        pool.shutdown(wait=True, cancel_futures=True)


def _stack(arrays, pin):
    import torch

    # Pinned memory lets the copy to the GPU run asynchronously.
    batch = torch.empty((len(arrays), *arrays[0].shape), dtype=torch.uint8, pin_memory=pin)
    np.stack(arrays, out=batch.numpy())
    return batch
