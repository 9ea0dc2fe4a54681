"""Text side of every classifier: prompt templates and per-class text prototypes.

A classifier needs one text prototype per class. It gets them, in this order, from

1. ``text_features``: an array ``(n_rows, dim)`` whose rows belong to ``classes`` (the
   classifier parameter; default: the classes of ``y``, in the order of ``np.unique(y)``),
   or a dict ``{label: vector or (n_prompts, dim) array}``;
2. a text encoder (``text_encoder``): any object with ``encode_text(list_of_str) -> array``
   of shape ``(n_texts, dim)``, fed with ``templates`` filled with the class names. The
   default ``"clip"`` is ``CLIPTextEncoder()``: the model of ``CLIPFeaturizer()`` at its
   defaults (see :func:`resolve_text_encoder`);
3. nothing (``text_encoder=None`` and no ``text_features``): the classifier works text-free
   and each estimator documents what it falls back to (class-mean image prototypes).

Nothing else decides: no state of the process, only the parameters and the input. When the
image features are :class:`~sklearn_cmm.CLIPEmbeddings` (straight from a
:class:`~sklearn_cmm.CLIPFeaturizer`), a :class:`~sklearn_cmm.CLIPTextEncoder` of another
model is refused with a ``ValueError``, so text and images never come from two models
silently.

Several prompts per class are averaged after L2-normalisation, then normalised again
(CLIP's prompt ensembling, :func:`ensemble_prompts`).

SeMoBridge also needs CLIP's ``text_projection`` matrix ``(width, dim)`` and the text
features before that projection. An encoder that can give them has a ``text_projection``
attribute and an ``encode_text_pre_projection(list_of_str) -> (n_texts, width)`` method.
"""

import string
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
        Mean over prompts of the text features before ``text_projection``, where the
        encoder made every prototype (None where ``text_features`` gave some).
    text_projection : ndarray of shape (width, dim) or None
        The matrix taking pre-projection text features to ``prototypes``' space.
    """

    prototypes: np.ndarray
    pre_projection: np.ndarray | None = None
    text_projection: np.ndarray | None = None



def resolve_text_encoder(text_encoder):
    """The encoder object behind a classifier's ``text_encoder`` parameter.

    ``"clip"`` is ``CLIPTextEncoder()``, the model of ``CLIPFeaturizer()`` at its
    defaults; any other value is returned as it is.
    """
    if isinstance(text_encoder, str) and text_encoder == "clip":
        from ._clip.text_encoder import CLIPTextEncoder

        return CLIPTextEncoder()
    return text_encoder


def check_templates(templates):
    """``templates`` as a list, each a string with exactly one ``{}`` slot; else ValueError."""
    if isinstance(templates, str):
        raise ValueError(
            f"templates must be a sequence of strings, not one string; got {templates!r}. "
            "Wrap it in a list."
        )
    templates = list(templates)
    if not templates:
        raise ValueError("templates is empty: give at least one template such as 'a photo of a {}.'.")
    for template in templates:
        if not isinstance(template, str):
            raise ValueError(f"templates must be strings; got {template!r}.")
        try:
            slots = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
        except ValueError as exc:
            raise ValueError(f"Template {template!r} is not a valid format string: {exc}.") from exc
        if slots != [""]:
            raise ValueError(
                f"Template {template!r} must have exactly one '{{}}' slot for the class name "
                f"(no names or numbers in it); it has {len(slots)} slot(s): {slots!r}."
            )
    return templates


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


def ensemble_prompts(prompt_features):
    """One unit prototype from the features of a class's prompts (CLIP's prompt ensembling).

    Parameters
    ----------
    prompt_features : array-like of shape (n_prompts, dim)

    Returns
    -------
    prototype : ndarray of shape (dim,)
        ``normalize(mean(normalize(prompt_features)))``.
    """
    return l2_normalize(l2_normalize(prompt_features, dtype=np.float64).mean(axis=0))


def _checked_rows(array, n_features, what):
    """``array`` as 2-D float64, checked for dimension, finiteness and zero rows."""
    array = np.atleast_2d(np.asarray(array, dtype=np.float64))
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2-D (one row per text); got shape {array.shape}.")
    if array.shape[1] != n_features:
        raise ValueError(
            f"{what} have dimension {array.shape[1]} but X has {n_features} features: image "
            "and text features must come from the same CLIP model. Pass "
            "text_encoder=CLIPFeaturizer(model, pretrained=...).text_encoder() for the model "
            "that embedded X (or use sklearn_cmm.make_clip_pipeline), or text_features=..."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contain NaN or infinity.")
    zero = np.flatnonzero(~np.any(array, axis=1))
    if len(zero):
        raise ValueError(f"{what} have all-zero rows {zero.tolist()}: a zero vector has no direction.")
    return array


def _array_rows(text_features, text_classes, classes, n_features):
    """Rows of an array ``text_features`` for ``classes``, picked by ``text_classes``."""
    array = np.asarray(text_features, dtype=np.float64)
    if text_classes is None:
        if array.ndim != 2 or array.shape[0] != len(classes):
            raise ValueError(
                f"text_features has shape {array.shape}; expected ({len(classes)}, "
                f"{n_features}): one row per class, in the order of np.unique(y). If the rows "
                "cover more classes than this fit sees (a meta-estimator fitting on a subset), "
                "pass classes=[the label of each row]."
            )
        return _checked_rows(array, n_features, "text_features")
    row_labels = np.asarray(text_classes)
    if row_labels.ndim != 1 or array.ndim != 2 or len(row_labels) != array.shape[0]:
        raise ValueError(
            f"classes has shape {row_labels.shape} and text_features {array.shape}: give one "
            "label per row of text_features."
        )
    row_of = {label: i for i, label in enumerate(row_labels.tolist())}
    if len(row_of) != len(row_labels):
        raise ValueError(f"classes has repeated labels: {row_labels.tolist()!r}.")
    unknown = [label for label in classes if label not in row_of]
    if unknown:
        raise ValueError(
            f"Labels {unknown!r} of y are not in classes={row_labels.tolist()!r}, the labels "
            "of the rows of text_features."
        )
    rows = array[[row_of[label] for label in classes]]
    return _checked_rows(rows, n_features, "text_features")


def _check_same_model(encoder, recorded):
    """Refuse text from another CLIP model than the one recorded on the image features."""
    from ._clip.config import model_name
    from ._clip.text_encoder import CLIPTextEncoder
    from ._clip.weights import weights_source

    if recorded is None or not isinstance(encoder, CLIPTextEncoder):
        return

    def identity(enc):
        name = model_name(enc.model)
        return name, weights_source(name, enc.pretrained)

    if identity(encoder) != identity(recorded):
        raise ValueError(
            f"X was embedded by CLIP model {recorded.model!r} (pretrained="
            f"{recorded.pretrained!r}), but the class text would come from "
            f"{encoder.model!r} (pretrained={encoder.pretrained!r}; text_encoder='clip' is "
            "CLIPTextEncoder(), the default model). Pass text_encoder="
            f"CLIPTextEncoder({recorded.model!r}, pretrained={recorded.pretrained!r}) "
            "(CLIPFeaturizer.text_encoder() gives it), or build the pipeline with "
            "sklearn_cmm.make_clip_pipeline(featurizer, classifier)."
        )


def class_text_features(
    classes,
    n_features,
    *,
    text_features=None,
    text_classes=None,
    class_names=None,
    templates=CLIP_IMAGENET_TEMPLATES,
    text_encoder=None,
    with_projection=False,
    recorded_encoder=None,
):
    """Text prototypes for ``classes``, or None when there is no text at all.

    Parameters
    ----------
    classes : ndarray of shape (n_classes,)
        The labels, in the order of a classifier's ``classes_``.
    n_features : int
        Dimension of the image features; the text features must match it.
    text_features : array-like of shape (n_rows, dim), dict or None
        Given text features (see the module docstring). Labels missing from a dict are
        encoded with ``text_encoder``.
    text_classes : array-like of shape (n_rows,) or None
        The label of each row of an array ``text_features``; None means ``classes``.
    class_names : dict or None
        Readable name of each label, for the text encoder.
    templates : sequence of str
        Prompt templates with one ``{}`` for the class name.
    text_encoder : object with ``encode_text``, ``"clip"`` or None
        Where text features come from when ``text_features`` does not give them.
    with_projection : bool, default=False
        Also fetch ``text_projection`` and the pre-projection features from the encoder
        (when there is one that provides them).
    recorded_encoder : CLIPTextEncoder or None
        The model recorded on the image features (:class:`~sklearn_cmm.CLIPEmbeddings`):
        a CLIPTextEncoder of another model is refused.

    Returns
    -------
    ClassText or None
    """
    classes = list(classes)
    templates = check_templates(templates)
    if text_classes is not None and (text_features is None or isinstance(text_features, dict)):
        raise ValueError(
            "classes names the rows of an array text_features; it cannot be used without "
            "one (a dict text_features is keyed by label already)."
        )
    prototypes = [None] * len(classes)
    if text_features is not None and not isinstance(text_features, dict):
        prototypes = list(l2_normalize(_array_rows(text_features, text_classes, classes, n_features)))
    elif text_features is not None:  # an empty dict matches no label either
        matched = [i for i, label in enumerate(classes) if label in text_features]
        if not matched:
            raise ValueError(
                f"No key of text_features matches a label of y: keys "
                f"{list(text_features)[:10]!r}, labels {classes[:10]!r}. Keys must equal the "
                "labels (same type: '0' is not 0)."
            )
        for i in matched:
            what = f"text_features[{classes[i]!r}]"
            prototypes[i] = ensemble_prompts(
                _checked_rows(text_features[classes[i]], n_features, what)
            )

    missing = [i for i, row in enumerate(prototypes) if row is None]
    need_encoder = bool(missing) or with_projection
    encoder = resolve_text_encoder(text_encoder) if need_encoder else None
    if encoder is None:
        if len(missing) == len(classes):
            return None
        if missing:
            raise ValueError(
                f"Labels {[classes[i] for i in missing]!r} have no entry in text_features "
                "and there is no text_encoder to encode them."
            )
        return ClassText(np.vstack(prototypes))
    _check_same_model(encoder, recorded_encoder)

    names = class_names_of([classes[i] for i in missing], class_names)
    prompts = [template.format(name) for name in names for template in templates]
    if prompts:
        encoded = _encoded(encoder.encode_text, prompts, n_features, "encode_text")
        for k, i in enumerate(missing):
            prototypes[i] = ensemble_prompts(encoded[k * len(templates) : (k + 1) * len(templates)])

    pre_projection = projection = None
    if with_projection and hasattr(encoder, "encode_text_pre_projection"):
        # a copy: a fitted estimator keeps it, and the encoder's own array may change
        projection = np.array(encoder.text_projection, dtype=np.float64)
    if projection is not None and len(missing) == len(classes):
        # Only where the encoder made every prototype are its pre-projection features
        # theirs; given text_features have none (nor, with integer labels, a name).
        pre = _encoded(
            encoder.encode_text_pre_projection, prompts, projection.shape[0],
            "encode_text_pre_projection",
        )
        pre_projection = pre.reshape(len(classes), len(templates), -1).mean(axis=1)
    return ClassText(np.vstack(prototypes), pre_projection, projection)


def _encoded(encode, prompts, width, method):
    """``encode(prompts)`` checked: one finite, non-zero row of ``width`` per prompt."""
    encoded = np.asarray(encode(prompts), dtype=np.float64)
    if encoded.ndim != 2 or encoded.shape[0] != len(prompts):
        raise ValueError(
            f"The text encoder's {method} returned shape {encoded.shape} for {len(prompts)} "
            f"prompts; expected ({len(prompts)}, {width}): one row per prompt."
        )
    return _checked_rows(encoded, width, f"The text encoder's {method} features")
