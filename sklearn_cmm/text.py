"""Text side of every classifier: prompt templates and per-class text prototypes.

A classifier needs one text prototype per class. It gets them, in this order, from

1. ``text_features``: an array ``(n_classes, dim)`` in the order of ``classes_``, or a dict
   ``{label: vector or (n_prompts, dim) array}``;
2. a text encoder (``text_encoder``): any object with ``encode_text(list_of_str) -> array``
   of shape ``(n_texts, dim)``, fed with ``templates`` filled with the class names. The
   default ``"clip"`` is the CLIP model the pipeline's :class:`~sklearn_cmm.CLIPFeaturizer`
   uses (see :func:`resolve_text_encoder`);
3. nothing (``text_encoder=None`` and no ``text_features``): the classifier works text-free
   and each estimator documents what it falls back to (class-mean image prototypes).

Several prompts per class are averaged after L2-normalisation, then normalised again
(CLIP's prompt ensembling).

SeMoBridge also needs CLIP's ``text_projection`` matrix ``(width, dim)`` and the text
features before that projection. An encoder that can give them has a ``text_projection``
attribute and an ``encode_text_pre_projection(list_of_str) -> (n_texts, width)`` method.
"""

from typing import NamedTuple

import numpy as np

from ._math.basic import l2_normalize

#: CLIP's 7 selected prompt templates for ImageNet (Radford et al. 2021, the CLIP repository's
#: prompt-engineering notebook).
CLIP_IMAGENET_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


class ClassText(NamedTuple):
    """Text prototypes of the classes, and what SeMoBridge needs besides.

    Attributes
    ----------
    prototypes : ndarray of shape (n_classes, dim)
        Prompt-ensembled text features, rows L2-normalised.
    pre_projection : ndarray of shape (n_classes, width) or None
        Mean over prompts of the text features before ``text_projection``.
    text_projection : ndarray of shape (width, dim) or None
        The matrix taking pre-projection text features to ``prototypes``' space.
    """

    prototypes: np.ndarray
    pre_projection: np.ndarray | None = None
    text_projection: np.ndarray | None = None


def resolve_text_encoder(text_encoder, n_features):
    """The encoder object behind a classifier's ``text_encoder`` parameter.

    ``"clip"`` resolves to the CLIP model most recently used by a
    :class:`~sklearn_cmm.CLIPFeaturizer` in this process whose embedding dimension is
    ``n_features`` (else to the featurizer's default model); any other value is returned
    as it is.
    """
    if isinstance(text_encoder, str) and text_encoder == "clip":
        from ._clip import default_text_encoder  # open_clip is imported only when needed

        return default_text_encoder(n_features)
    return text_encoder


def class_names_of(classes, class_names=None):
    """Readable name of each label: ``class_names[label]``, else the label if it is a string."""
    class_names = {} if class_names is None else class_names
    names, missing = [], []
    for label in classes:
        if label in class_names:
            names.append(str(class_names[label]))
        elif isinstance(label, str):
            names.append(label)
        else:
            missing.append(label)
    if missing:
        raise ValueError(
            f"Labels {missing!r} have no readable name for the text encoder: pass "
            "class_names={label: name} or text_features, or use string labels."
        )
    return names


def _check_finite(array, what):
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contain NaN or infinity.")


def _check_dim(dim, n_features, what):
    if dim != n_features:
        raise ValueError(
            f"{what} have dimension {dim} but X has {n_features} features: image and text "
            "features must come from the same CLIP model."
        )


def _ensemble(prompt_features):
    """Normalise each prompt's feature, average them, normalise the average."""
    return l2_normalize(l2_normalize(prompt_features).mean(axis=0))


def class_text_features(
    classes,
    n_features,
    *,
    text_features=None,
    class_names=None,
    templates=CLIP_IMAGENET_TEMPLATES,
    text_encoder=None,
    with_projection=False,
):
    """Text prototypes for ``classes``, or None when there is no text at all.

    Parameters
    ----------
    classes : ndarray of shape (n_classes,)
        The labels, in the order of a classifier's ``classes_``.
    n_features : int
        Dimension of the image features; the text features must match it.
    text_features : array-like of shape (n_classes, dim), dict or None
        Given text features (see the module docstring). Labels missing from a dict are
        encoded with ``text_encoder``.
    class_names : dict or None
        Readable name of each label, for the text encoder.
    templates : sequence of str
        Prompt templates with one ``{}`` for the class name.
    text_encoder : object with ``encode_text``, ``"clip"`` or None
        Where text features come from when ``text_features`` does not give them.
    with_projection : bool, default=False
        Also fetch ``text_projection`` and the pre-projection features from the encoder
        (when there is one that provides them).

    Returns
    -------
    ClassText or None
    """
    classes = list(classes)
    prototypes = [None] * len(classes)
    if text_features is not None and not isinstance(text_features, dict):
        array = np.asarray(text_features, dtype=np.float64)
        if array.ndim != 2 or array.shape[0] != len(classes):
            raise ValueError(
                f"text_features has shape {array.shape}; expected ({len(classes)}, "
                f"{n_features}): one row per class, in the order of np.unique(y)."
            )
        _check_dim(array.shape[1], n_features, "text_features")
        _check_finite(array, "text_features")
        prototypes = list(l2_normalize(array))
    elif text_features is not None:
        for i, label in enumerate(classes):
            if label in text_features:
                value = np.atleast_2d(np.asarray(text_features[label], dtype=np.float64))
                _check_dim(value.shape[1], n_features, f"text_features[{label!r}]")
                _check_finite(value, f"text_features[{label!r}]")
                prototypes[i] = _ensemble(value)

    missing = [i for i, row in enumerate(prototypes) if row is None]
    need_encoder = bool(missing) or with_projection
    encoder = resolve_text_encoder(text_encoder, n_features) if need_encoder else None
    if encoder is None:
        if len(missing) == len(classes):
            return None
        if missing:
            raise ValueError(
                f"Labels {[classes[i] for i in missing]!r} have no entry in text_features "
                "and there is no text_encoder to encode them."
            )
        return ClassText(np.vstack(prototypes))

    templates = list(templates)
    names = class_names_of([classes[i] for i in missing], class_names)
    prompts = [template.format(name) for name in names for template in templates]
    if prompts:
        encoded = np.asarray(encoder.encode_text(prompts), dtype=np.float64)
        _check_dim(encoded.shape[1], n_features, "The text encoder's features")
        _check_finite(encoded, "The text encoder's features")
        for k, i in enumerate(missing):
            prototypes[i] = _ensemble(encoded[k * len(templates) : (k + 1) * len(templates)])

    pre_projection = projection = None
    if with_projection and hasattr(encoder, "encode_text_pre_projection"):
        projection = np.asarray(encoder.text_projection, dtype=np.float64)
        all_prompts = [
            template.format(name)
            for name in class_names_of(classes, class_names)
            for template in templates
        ]
        pre = np.asarray(encoder.encode_text_pre_projection(all_prompts), dtype=np.float64)
        pre_projection = pre.reshape(len(classes), len(templates), -1).mean(axis=1)
    return ClassText(np.vstack(prototypes), pre_projection, projection)
