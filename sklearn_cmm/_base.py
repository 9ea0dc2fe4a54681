"""What the four few-shot classifiers share: text-side parameters, validation, prediction."""

import copy
import warnings
from numbers import Integral

import numpy as np
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ._embeddings import recorded_text_encoder, recorded_views
from ._math.basic import class_means, l2_normalize
from ._math.calibration import fit_temperature, laplace_smoothing
from ._threads import sized_threads
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
        more classes than a fit sees (a cross-validation fold that lacks a class).
        None: the rows are the classes of ``y`` in sorted order. Meta-estimators that
        relabel the targets (``OneVsRestClassifier`` and ``OneVsOneClassifier`` fit on 0
        and 1) need a text-free classifier: with ``classes`` their 0 and 1 would meet the
        text rows of the classes labelled 0 and 1.

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

    n_views : int, default=1
        Embeddings per row of ``X``, side by side: the image's own first, then augmented
        views of it (``CLIPFeaturizer(train_views=n_views - 1, view_output="columns")``
        makes them). ``fit`` takes every view as a shot of the row's class (class means,
        training), and whatever it validates on the shots (the temperature, searches,
        early stopping) holds out whole images, views and all, and scores their own
        embeddings only. Prediction uses each row's first embedding, and the fitted
        attributes and ``transform`` have the dimension of one embedding
        (``n_features_in_ // n_views``).

    random_state : int, RandomState instance or None, default=None
        Seeds what is random in a fit: the ``n_shots`` draw and, where an estimator
        has them, the random search of ``search="cv"`` and the draws of what it
        validates on (folds, held-out shots). Training is full batch and needs no seed.

    n_jobs : int or None, default=None
        CPU threads of ``fit``: BLAS's, and torch's intra-op threads where the fit trains
        with torch on the CPU (joblib's meaning: ``-1`` every core, ``-2`` all but one).
        None sizes them to the problem: one thread per ``1e9`` multiply-adds of the fit's
        largest product (``n_samples * n_features * max(n_features, n_classes)``), so
        one thread for tens of classes and a few shots, where more threads only wait
        for each other (and spin on a busy machine), and every core at ImageNet scale.
        The settings found are restored when ``fit`` returns."""

# The ``calibration`` parameter's documentation, for the classifiers that expose it.
CALIBRATION_PARAMETER_DOC = """calibration : {"temperature"} or None, default="temperature"
        How :meth:`predict_proba` turns the logits into probabilities. ``"temperature"``
        divides them by ``temperature_``, the temperature minimising the log-loss of
        held-out logits of the training shots (see the user guide, *Calibrated
        probabilities*); None keeps the method's own scale (``temperature_ = 1``).
        Predictions and :meth:`decision_function` (the logits) do not depend on it."""


class FewShotClassifierBase(ClassifierMixin, BaseEstimator):
    """Base class of the few-shot classifiers; not for direct use.

    A subclass implements ``_fit(X, y_encoded, class_text, rng)`` (``class_text`` is a
    :class:`~sklearn_cmm.text.ClassText` or None in text-free mode) and ``_logits(X)``
    returning ``(n_samples, n_classes)`` scores; this class does validation, the shot
    draw, the text prototypes, the temperature of the probabilities and the prediction
    methods. A subclass whose logits of its own training shots are optimistic overrides
    :meth:`_calibration_logits` (honest logits of the shots; :meth:`_cross_fitted_logits`
    is a generic, ``n_folds`` times dearer, way to get them).

    With ``n_views > 1``, ``_fit`` gets every view as a row: row ``i * n_views + k`` is
    view ``k`` of image ``i`` (:func:`~sklearn_cmm._math.basic.view_rows`), view 0 the
    image itself, and ``y_encoded`` repeats each image's class. What a subclass validates
    on the shots holds out whole images and scores their own rows.
    """

    _parameter_constraints = {
        "text_features": ["array-like", dict, None],
        "classes": ["array-like", None],
        "class_names": [dict, None],
        "templates": ["array-like"],
        "text_encoder": [StrOptions({"clip"}), HasMethods(["encode_text"]), None],
        "n_shots": [Interval(Integral, 1, None, closed="left"), None],
        "n_views": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "calibration": [StrOptions({"temperature"}), None],
        "n_jobs": [Interval(Integral, 1, None, closed="left"),
                   Interval(Integral, None, -1, closed="right"), None],
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
        n_views=1,
        random_state=None,
        calibration="temperature",
        n_jobs=None,
    ):
        self.text_features = text_features
        self.classes = classes
        self.class_names = class_names
        self.templates = templates
        self.text_encoder = text_encoder
        self.n_shots = n_shots
        self.n_views = n_views
        self.random_state = random_state
        self.calibration = calibration
        self.n_jobs = n_jobs

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
        try:
            self._validate_and_fit(X, y)
        except BaseException:
            # A failed fit (bad labels, a diverged training run, an interrupt) leaves no
            # half-fitted estimator that check_is_fitted would take for a fitted one, nor
            # a refit's new classes_ over the earlier fit's model.
            for name in [n for n in vars(self) if n.endswith("_") and not n.startswith("_")]:
                delattr(self, name)
            raise
        return self

    def _validate_and_fit(self, X, y):
        """:meth:`fit`'s work, which sets the fitted attributes as it goes."""
        recorded_encoder = recorded_text_encoder(X)  # validate_data drops the record
        views_record = recorded_views(X)
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        if views_record is not None and views_record != self.n_views:
            raise ValueError(
                f"X holds {views_record} embeddings per image (CLIPFeaturizer's views, "
                f"side by side) but n_views={self.n_views}; set n_views={views_record}."
            )
        if X.shape[1] % self.n_views:
            raise ValueError(
                f"X has {X.shape[1]} features, not a multiple of n_views={self.n_views}."
            )
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
        # Row i * n_views + k of the shots is view k of image i (view 0 the image itself).
        dim = X.shape[1] // self.n_views
        X = X.reshape(len(X) * self.n_views, dim)
        y_encoded = np.repeat(y_encoded, self.n_views)
        class_text = class_text_features(
            self.classes_,
            dim,
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
        work = X.shape[0] * X.shape[1] * max(X.shape[1], len(self.classes_))
        with sized_threads(work, self.n_jobs):
            self._fit(X, y_encoded, class_text, rng)
            self.temperature_ = self._fit_temperature(X, y_encoded, class_text, rng)

    def _fit_temperature(self, X, y_encoded, class_text, rng):
        """``temperature_``: fitted on honest logits of the shots, or 1 without calibration."""
        if self.calibration is None:
            return 1.0
        logits, y = self._calibration_logits(X, y_encoded, class_text, rng)
        return fit_temperature(logits, y, smoothing=laplace_smoothing(len(y)))

    def _calibration_logits(self, X, y_encoded, class_text, rng):
        """Logits of labelled shots as the fitted model would score unseen images.

        The temperature is fitted on them, so they must not be optimistic. The default is
        the fitted model's logits of the shots, honest only for a method whose logits do
        not depend on the shots (zero-shot with text prototypes). A method fitted on the
        shots overrides this with leave-one-out logits it has in closed form, or with
        :meth:`_cross_fitted_logits`.

        Parameters
        ----------
        X : ndarray of shape (n_samples * n_views, n_features)
            The training shots, as given to ``_fit`` (their views included).
        y_encoded : ndarray of shape (n_samples * n_views,)
        class_text : ClassText or None
        rng : RandomState
            The fit's random state.

        Returns
        -------
        logits : ndarray of shape (n_rows, n_classes)
        y : ndarray of shape (n_rows,)
            The class of each row (the images' classes when every image has a row).
        """
        v = self.n_views
        return self._logits(np.asarray(X[::v], dtype=np.float64)), y_encoded[::v]

    def _n_cross_fit_folds(self, y_encoded, class_text, n_folds):
        """Folds :meth:`_cross_fitted_logits` uses; below 2 it returns training logits."""
        y_images = y_encoded[:: self.n_views]
        n_folds = min(n_folds, len(y_images))
        if class_text is None:  # a text-free fit needs a shot of every class
            n_folds = min(n_folds, np.bincount(y_images, minlength=len(self.classes_)).min())
        return n_folds

    def _cross_fitted_logits(self, X, y_encoded, class_text, rng, n_folds=5, fit=None,
                             scores=None, scored=None):
        """Logits of each image by the method fitted (``_fit``) on the other folds.

        With views (``n_views > 1``) an image's views go with it, and its own embedding is
        scored. Each class's shots are dealt, in their order in ``X``, round-robin into
        ``n_folds`` folds (no randomness, so that the temperature is a function of the
        input alone) (at most one fold per shot), so that a fold holds out about
        ``1 / n_folds`` of every class; with one shot per class a fold holds out whole
        classes, which the other folds' fit only knows from its text. Text-free, a fit
        needs a shot of every class: the folds are then at most as many as the rarest
        class's shots, and with a class of a single shot the plain training logits are
        returned (optimistic). Costs ``n_folds`` fits; the estimator is not changed.

        ``fit(model, training)`` and ``scores(model, X)`` replace
        ``model._fit(X[training], y_encoded[training], class_text, rng)`` (``training``
        the boolean mask of a fold's training rows of ``X``) and ``model._logits(X)``
        (e.g. to fit part of the method, to reuse products of all the rows, or to return
        the terms of its logits separately). ``scored`` (sorted
        indices of images) restricts the logits returned to those images, in that
        order; the folds and their fits are the same.
        """
        if fit is None:
            def fit(model, training):
                model._fit(X[training], y_encoded[training], class_text, rng)
        if scores is None:
            def scores(model, X):
                return model._logits(X)
        n_classes, v = len(self.classes_), self.n_views
        y_images = y_encoded[::v]
        if scored is None:
            scored = np.arange(len(y_images))
        n_folds = self._n_cross_fit_folds(y_encoded, class_text, n_folds)
        if n_folds < 2:
            return scores(self, np.asarray(X[scored * v], dtype=np.float64))
        folds = np.empty(len(y_images), dtype=int)
        start = 0
        for c in range(n_classes):  # continue the round-robin across classes
            members = np.flatnonzero(y_images == c)
            folds[members] = (start + np.arange(len(members))) % n_folds
            start += len(members)
        logits = None
        for k in range(n_folds):
            held_out = folds == k
            rows = np.flatnonzero(held_out[scored])  # of the logits returned
            if not rows.size:
                continue
            model = copy.copy(self)  # _fit rebinds attributes, never mutates them
            training = np.repeat(~held_out, v)
            fit(model, training)
            own = scored[rows] * v  # the held-out images' own embeddings
            fold_logits = scores(model, np.asarray(X[own], dtype=np.float64))
            if logits is None:
                logits = np.empty((len(scored), fold_logits.shape[1]))
            logits[rows] = fold_logits
        return logits

    def _validated_features(self, X):
        """``X`` checked against the fit, as float64 (inference always runs in float64);
        with views, each row's first embedding."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return np.asarray(X[:, : self._n_features_out], dtype=np.float64)

    @property
    def _n_features_out(self):
        """The dimension of one embedding: the features prediction reads, and those
        ``transform`` returns where a classifier has one (``get_feature_names_out``)."""
        return self.n_features_in_ // self.n_views

    def _validated_logits(self, X):
        return self._logits(self._validated_features(X))

    def decision_function(self, X):
        """Class scores of the method (its logits, not divided by ``temperature_``).

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
        """Class probabilities: the softmax of the logits divided by ``temperature_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return softmax(self._validated_logits(X) / self.temperature_, axis=1)

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
        return log_softmax(self._validated_logits(X) / self.temperature_, axis=1)

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

    def __repr__(self, N_CHAR_MAX=700):
        # Array parameters (text_features, text_projection) show their shape and dtype,
        # not thousands of numbers; the parameters themselves are untouched.
        shown = copy.copy(self)
        for name, value in self.get_params(deep=False).items():
            setattr(shown, name, summarize_arrays(value))
        return BaseEstimator.__repr__(shown, N_CHAR_MAX=N_CHAR_MAX)

    def _get_params_html(self, deep=True, doc_link=""):
        # The parameter table of the HTML repr (scikit-learn >= 1.7), summarised the same way.
        params = super()._get_params_html(deep=deep, doc_link=doc_link)
        for name, value in list(params.items()):
            params[name] = summarize_arrays(value)
        return params

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Unseeded, a shot draw (or the fit's own draws) differs between fits.
        tags.non_deterministic = self.random_state is None and (
            self.n_shots is not None or self._fit_draws()
        )
        return tags

    def _fit_draws(self):
        """Whether the fit itself draws at random (besides ``n_shots``), e.g. a search's
        candidates or validation folds."""
        return False


class SearchedBlendMixin:
    """For a classifier with ``search``, ``train`` and ``calibration`` whose fit draws:
    the search's candidates, the training's validation folds, and beyond
    ``MAX_HELD_OUT`` shots the held-out shots that are scored (see
    :meth:`FewShotClassifierBase._fit_draws`)."""

    def _fit_draws(self):
        return self.search is not None or self.train or self.calibration is not None


class ArraySummary:
    """Stands for an array in a repr: its type, shape and dtype, ``<ndarray (10, 512) float32>``.

    Short enough (up to 30 characters for 2-d arrays) that the HTML parameter table,
    which cuts longer values, shows it whole."""

    def __init__(self, array):
        self.text = f"<{type(array).__name__} {tuple(array.shape)} {array.dtype}>"

    def __repr__(self):
        return self.text


def summarize_arrays(value):
    """``value`` with every array (anything with ``shape`` and ``dtype``), also the values
    of a dict, replaced by an :class:`ArraySummary`; other values unchanged."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return ArraySummary(value)
    if type(value) is dict:
        return {key: summarize_arrays(item) for key, item in value.items()}
    return value


def class_prototypes(X, y_encoded, n_classes, class_text):
    """Unit class prototypes: the text prototypes, or image class means when text-free.

    Returns the ``(n_classes, dim)`` prototypes and their source, ``"text"`` or
    ``"image_means"`` (normalised mean of the normalised image features of each class).
    """
    if class_text is not None:
        return class_text.prototypes, "text"
    return l2_normalize(class_means(l2_normalize(X), y_encoded, n_classes)), "image_means"


def fill_doc(cls):
    """Put the shared parameter documentation into ``cls``'s docstring.

    ``%(text_parameters)s`` becomes the text-side parameters, ``%(calibration_parameter)s``
    the ``calibration`` parameter.
    """
    cls.__doc__ = cls.__doc__.replace("%(text_parameters)s", TEXT_PARAMETERS_DOC).replace(
        "%(calibration_parameter)s", CALIBRATION_PARAMETER_DOC
    )
    return cls
