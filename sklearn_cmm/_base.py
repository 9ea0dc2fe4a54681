"""What the four few-shot classifiers share: text-side parameters, validation, prediction."""

import warnings
from numbers import Integral

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ._embeddings import recorded_text_encoder
from ._math.basic import class_means, l2_normalize
from .model_selection import draw_shots
from .text import CLIP_IMAGENET_TEMPLATES, class_text_features

# Docstring paragraphs every classifier repeats verbatim, kept in one place.
TEXT_PARAMETERS_DOC = """text_features : array-like of shape (n_rows, dim), dict or None, default=None
        Class text embeddings: an array with one row per class (in the order of
        ``np.unique(y)``, or of ``classes`` when given), or a dict ``{label: vector or
        (n_prompts, dim) array}`` (several prompts of a class are averaged after
        L2-normalisation). Labels missing from a dict are encoded with ``text_encoder``;
        a dict none of whose keys is a label of ``y`` is an error.

    classes : array-like of shape (n_rows,) or None, default=None
        The label of each row of an array ``text_features``, so that the array may cover
        more classes than a fit sees (a meta-estimator's fold, ``OneVsRestClassifier``).
        None: the rows are the classes of ``y`` in sorted order.

    class_names : dict or None, default=None
        Readable name of each label for the prompts; string labels are their own names.

    templates : sequence of str, default=CLIP_IMAGENET_TEMPLATES
        Prompt templates, each with exactly one ``{}`` for the class name (CLIP's 7
        ImageNet templates).

    text_encoder : "clip", object with ``encode_text`` or None, default="clip"
        Where text features come from when ``text_features`` does not give them.
        ``"clip"`` is ``CLIPTextEncoder()``: the model of ``CLIPFeaturizer()`` at its
        defaults, so ``make_pipeline(CLIPFeaturizer(), classifier)`` works as it is. For
        another model pass its encoder (``featurizer.text_encoder()``, a
        :class:`~sklearn_cmm.CLIPTextEncoder`) or use
        :func:`~sklearn_cmm.make_clip_pipeline`; features straight from a featurizer of
        another model raise a ``ValueError`` rather than meet the wrong text. Any object
        with ``encode_text(list_of_str) -> (n, dim)`` is used as it is. With ``None`` and
        no ``text_features`` the classifier is *text-free*: class prototypes are the
        normalised class means of the normalised image features.

    n_shots : int or None, default=None
        If set, ``fit`` keeps ``n_shots`` random samples per class (so that
        :class:`~sklearn.model_selection.GridSearchCV` can search over shots). Every class
        needs at least that many samples.

    random_state : int, RandomState instance or None, default=None
        Seeds what is random in a fit: the ``n_shots`` draw and, where an estimator
        has one, the random search of ``search="cv"``. Training is full batch and
        needs no seed."""


class FewShotClassifierBase(ClassifierMixin, BaseEstimator):
    """Base class of the few-shot classifiers; not for direct use.

    A subclass implements ``_fit(X, y_encoded, class_text, rng)`` (``class_text`` is a
    :class:`~sklearn_cmm.text.ClassText` or None in text-free mode) and ``_logits(X)``
    returning ``(n_samples, n_classes)`` scores; this class does validation, the shot
    draw, the text prototypes and the prediction methods.
    """

    _parameter_constraints = {
        "text_features": ["array-like", dict, None],
        "classes": ["array-like", None],
        "class_names": [dict, None],
        "templates": ["array-like"],
        "text_encoder": [StrOptions({"clip"}), HasMethods(["encode_text"]), None],
        "n_shots": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
    }

    #: Subclasses that need CLIP's text projection from the encoder set this.
    _needs_text_projection = False

    def __init__(
        self,
        text_features=None,
        *,
        classes=None,
        class_names=None,
        templates=CLIP_IMAGENET_TEMPLATES,
        text_encoder="clip",
        n_shots=None,
        random_state=None,
    ):
        self.text_features = text_features
        self.classes = classes
        self.class_names = class_names
        self.templates = templates
        self.text_encoder = text_encoder
        self.n_shots = n_shots
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit the classifier on image features and labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings (e.g. from :class:`~sklearn_cmm.CLIPFeaturizer`).
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self : object
            The fitted classifier.
        """
        recorded_encoder = recorded_text_encoder(X)  # validate_data drops the record
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        with warnings.catch_warnings():
            # Few shots of many classes is this estimator's normal case, not a sign of a
            # regression target.
            warnings.filterwarnings("ignore", "The number of unique classes is greater")
            check_classification_targets(y)
        rng = check_random_state(self.random_state)
        if self.n_shots is not None:
            shots, _ = draw_shots(y, self.n_shots, rng)
            X, y = X[shots], y[shots]
        self.classes_, y_encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes; got 1 class."
            )
        class_text = class_text_features(
            self.classes_,
            X.shape[1],
            text_features=self.text_features,
            text_classes=self.classes,
            class_names=self.class_names,
            templates=self.templates,
            text_encoder=self.text_encoder,
            with_projection=self._needs_text_projection,
            recorded_encoder=recorded_encoder,
        )
        # X stays float32 when given so: the math computes in float64, except the products
        # with the (n_samples x dim) features where a function says it keeps X's precision.
        try:
            self._fit(X, y_encoded, class_text, rng)
        except BaseException:
            # A failed fit (a diverged training run, an interrupt) leaves no half-fitted
            # estimator that check_is_fitted would take for a fitted one.
            for name in [n for n in vars(self) if n.endswith("_") and not n.startswith("_")]:
                delattr(self, name)
            raise
        return self

    def _validated_features(self, X):
        """``X`` checked against the fit, as float64: inference always runs in float64."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return np.asarray(X, dtype=np.float64)

    def _validated_logits(self, X):
        return self._logits(self._validated_features(X))

    def decision_function(self, X):
        """Class scores of the method (its logits).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes) or (n_samples,)
            The logits; with two classes, the difference ``logit_1 - logit_0`` as
            scikit-learn's binary convention asks.
        """
        logits = self._validated_logits(X)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X):
        """Class probabilities: the softmax of the logits.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return softmax(self._validated_logits(X), axis=1)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        logits = self._validated_logits(X)
        return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)

    def predict(self, X):
        """Most likely class of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        logits = self._validated_logits(X)  # checks fitted before classes_ is read
        return self.classes_[np.argmax(logits, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # With a shot draw or training and no seed, two fits differ.
        tags.non_deterministic = self.random_state is None and self.n_shots is not None
        return tags


def class_prototypes(X, y_encoded, n_classes, class_text):
    """Unit class prototypes: the text prototypes, or image class means when text-free.

    Returns the ``(n_classes, dim)`` prototypes and their source, ``"text"`` or
    ``"image_means"`` (normalised mean of the normalised image features of each class).
    """
    if class_text is not None:
        return class_text.prototypes, "text"
    return l2_normalize(class_means(l2_normalize(X), y_encoded, n_classes)), "image_means"


def fill_doc(cls):
    """Put the shared text-parameter documentation into ``cls``'s docstring."""
    cls.__doc__ = cls.__doc__.replace("%(text_parameters)s", TEXT_PARAMETERS_DOC)
    return cls
