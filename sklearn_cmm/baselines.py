"""The baselines every few-shot CLIP table starts from: zero-shot CLIP and Tip-Adapter."""

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import FewShotClassifierBase, class_prototypes, fill_doc
from ._math.basic import l2_normalize, loo_prototype_cosine
from ._math.search import random_candidates
from ._math.tip_adapter import (
    cache_indicator,
    loo_accuracies,
    tip_adapter_logits,
)
from .text import CLIP_IMAGENET_TEMPLATES

#: Largest ``n_queries x n_cache`` kernel Tip-Adapter computes at once (32 MB of float64):
#: predictions and the search run in blocks of queries of this size.
_KERNEL_BLOCK = 2**22

#: Most training shots the leave-one-out search classifies (each against all the others).
_MAX_SEARCH_QUERIES = 1000


@fill_doc
class ZeroShotClassifier(FewShotClassifierBase):
    """CLIP zero-shot classification: the class whose text prototype is most similar.

    The logits are ``logit_scale * cos(x, t_c)`` with ``t_c`` the prompt-ensembled text
    prototype of class ``c``; the training images only tell which classes exist. Text-free
    (``text_encoder=None`` and no ``text_features``) it is a nearest-centroid classifier
    under cosine similarity, the centroids being the class means of the normalised images.

    Parameters
    ----------
    %(text_parameters)s

    %(calibration_parameter)s

    logit_scale : float, default=100.0
        CLIP's temperature: multiplies the cosines, so it shapes ``predict_proba`` but not
        ``predict``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    temperature_ : float
        Temperature of :meth:`predict_proba` (``softmax(logits / temperature_)``), fitted on
        held-out logits of the training shots; 1 with ``calibration=None``.
    prototypes_ : ndarray of shape (n_classes, n_features)
        Unit class prototypes.
    prototype_source_ : {"text", "image_means"}
        Where the prototypes come from.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    TipAdapterClassifier : Adds a cache model of the training images.
    sklearn.neighbors.NearestCentroid : Euclidean centroids.

    References
    ----------
    .. [1] A. Radford et al., "Learning Transferable Visual Models From Natural Language
       Supervision", ICML 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cmm import ZeroShotClassifier
    >>> text = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> X = np.array([[0.9, 0.2], [0.1, 0.8]])
    >>> clf = ZeroShotClassifier(text_features=text).fit(X, ["cat", "dog"])
    >>> clf.predict([[0.7, 0.1]])
    array(['cat'], dtype='<U3')
    """

    _parameter_constraints = {
        **FewShotClassifierBase._parameter_constraints,
        "logit_scale": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        text_features=None,
        *,
        classes=None,
        class_names=None,
        templates=CLIP_IMAGENET_TEMPLATES,
        text_encoder="clip",
        logit_scale=100.0,
        n_shots=None,
        random_state=None,
        calibration="temperature",
        n_jobs=None,
    ):
        super().__init__(
            text_features,
            classes=classes,
            class_names=class_names,
            templates=templates,
            text_encoder=text_encoder,
            n_shots=n_shots,
            random_state=random_state,
            calibration=calibration,
            n_jobs=n_jobs,
        )
        self.logit_scale = logit_scale

    def _fit(self, X, y_encoded, class_text, rng):
        self.prototypes_, self.prototype_source_ = class_prototypes(
            X, y_encoded, len(self.classes_), class_text
        )

    def _calibration_logits(self, X, y_encoded, class_text, rng):
        if self.prototype_source_ == "text":  # the shots do not shape the logits
            return super()._calibration_logits(X, y_encoded, class_text, rng)
        # Image-mean prototypes: each shot against its class mean without itself.
        keys = l2_normalize(np.asarray(X, dtype=np.float64))
        n_classes = len(self.classes_)
        return self.logit_scale * loo_prototype_cosine(keys, keys, y_encoded, n_classes), y_encoded

    def _logits(self, X):
        return self.logit_scale * l2_normalize(X) @ self.prototypes_.T


@fill_doc
class TipAdapterClassifier(FewShotClassifierBase):
    """Training-free Tip-Adapter: zero-shot logits plus a cache model of the shots.

    ``logits = logit_scale * cos(x, T) + alpha * exp(-beta * (1 - cos(x, K))) @ L``, with
    ``T`` the class text prototypes, ``K`` the normalised training images (the cache keys)
    and ``L`` their one-hot labels. Text-free, ``T`` are the class means of the normalised
    images.

    Parameters
    ----------
    %(text_parameters)s

    %(calibration_parameter)s

    alpha : float, default=1.0
        Weight of the cache logits (the residual ratio).
    beta : float, default=5.5
        Sharpness of the affinity kernel.
    logit_scale : float, default=100.0
        Scale of the zero-shot cosines, as in CLIP.
    search : {"cv"} or None, default=None
        ``"cv"`` chooses ``alpha`` and ``beta`` by leave-one-out cross-validation on the
        training shots (each shot is classified by a cache without itself), from the given
        values and ``n_search_trials - 1`` random draws, ``alpha`` in [0, 10] and ``beta``
        in [0.1, 10], ``beta`` taking ``ceil(sqrt(n_search_trials - 1))`` distinct values
        (each shared by as many ``alpha``). The test set is never needed. Cost, with
        ``m = min(n_shots_total, 1000)`` left-out shots (a random subset beyond 1000):
        one ``m x n_shots_total x n_features`` affinity product, one kernel of
        ``m x n_shots_total`` exponentials per distinct ``beta`` and an
        ``m x n_classes`` argmax per trial, in bounded memory: at 1000 classes x 16 shots
        (512-d) about what predicting 3,000 images costs (``benchmarks/bench_search.py``).
    n_search_trials : int, default=200
        Candidates tried by ``search="cv"``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    temperature_ : float
        Temperature of :meth:`predict_proba` (``softmax(logits / temperature_)``), fitted on
        held-out logits of the training shots; 1 with ``calibration=None``.
    prototypes_ : ndarray of shape (n_classes, n_features)
        Unit class prototypes of the zero-shot part.
    prototype_source_ : {"text", "image_means"}
        Where the prototypes come from.
    cache_keys_ : ndarray of shape (n_shots_total, n_features)
        The normalised training images.
    cache_labels_ : ndarray of shape (n_shots_total,)
        Their class indices (into ``classes_``).
    alpha_, beta_ : float
        The weights used: the parameters, or the search's choice.
    search_score_ : float or None
        Leave-one-out accuracy of the chosen weights on the (left-out) shots
        (``search="cv"``).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    ZeroShotClassifier : The zero-shot part alone.
    SeMoBridgeClassifier : Bridges the shots into the text modality first.

    References
    ----------
    .. [1] R. Zhang et al., "Tip-Adapter: Training-free Adaption of CLIP for Few-shot
       Classification", ECCV 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cmm import TipAdapterClassifier
    >>> rng = np.random.RandomState(0)
    >>> text = np.eye(3, 8)
    >>> y = np.repeat([0, 1, 2], 4)
    >>> X = np.eye(3, 8)[y] + 0.3 * rng.randn(12, 8)
    >>> clf = TipAdapterClassifier(text_features=text, search="cv", random_state=0)
    >>> clf.fit(X, y).score(X, y)
    1.0
    """

    _parameter_constraints = {
        **FewShotClassifierBase._parameter_constraints,
        "alpha": [Interval(Real, 0, None, closed="left")],
        "beta": [Interval(Real, 0, None, closed="left")],
        "logit_scale": [Interval(Real, 0, None, closed="neither")],
        "search": [StrOptions({"cv"}), None],
        "n_search_trials": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        text_features=None,
        *,
        classes=None,
        class_names=None,
        templates=CLIP_IMAGENET_TEMPLATES,
        text_encoder="clip",
        alpha=1.0,
        beta=5.5,
        logit_scale=100.0,
        search=None,
        n_search_trials=200,
        n_shots=None,
        random_state=None,
        calibration="temperature",
        n_jobs=None,
    ):
        super().__init__(
            text_features,
            classes=classes,
            class_names=class_names,
            templates=templates,
            text_encoder=text_encoder,
            n_shots=n_shots,
            random_state=random_state,
            calibration=calibration,
            n_jobs=n_jobs,
        )
        self.alpha = alpha
        self.beta = beta
        self.logit_scale = logit_scale
        self.search = search
        self.n_search_trials = n_search_trials

    def _fit(self, X, y_encoded, class_text, rng):
        n_classes = len(self.classes_)
        self.prototypes_, self.prototype_source_ = class_prototypes(
            X, y_encoded, n_classes, class_text
        )
        self.cache_keys_ = l2_normalize(np.asarray(X, dtype=np.float64))
        self.cache_labels_ = y_encoded
        self.alpha_, self.beta_, self.search_score_ = self.alpha, self.beta, None
        if self.search == "cv":
            self._search(n_classes, rng)

    def _search(self, n_classes, rng):
        keys, labels = self.cache_keys_, self.cache_labels_
        candidates = random_candidates(
            {"alpha": (0.0, 10.0), "beta": (0.1, 10.0)},
            {"alpha": self.alpha, "beta": self.beta},
            self.n_search_trials,
            rng,
            shared="beta",
        )
        queries, zero_shot = self._held_out_zero_shot(rng)
        accuracies = loo_accuracies(
            self.logit_scale * zero_shot, keys, labels, n_classes, queries, candidates,
            block_entries=_KERNEL_BLOCK,
        )
        best = int(np.argmax(accuracies))  # the first among equals: the defaults win ties
        self.alpha_, self.beta_ = candidates[best]["alpha"], candidates[best]["beta"]
        self.search_score_ = float(accuracies[best])

    def _held_out_zero_shot(self, rng):
        """Shots to score by leave-one-out (at most ``_MAX_SEARCH_QUERIES``) and their
        zero-shot cosines, the shot itself left out of image-mean prototypes."""
        keys, labels = self.cache_keys_, self.cache_labels_
        if len(keys) <= _MAX_SEARCH_QUERIES:
            queries = np.arange(len(keys))
        else:
            queries = np.sort(rng.choice(len(keys), _MAX_SEARCH_QUERIES, replace=False))
        if self.prototype_source_ == "text":
            return queries, keys[queries] @ self.prototypes_.T
        return queries, loo_prototype_cosine(keys[queries], keys, labels, len(self.classes_), queries)

    def _calibration_logits(self, X, y_encoded, class_text, rng):
        # Leave-one-out logits at the chosen alpha and beta: a shot's own cache entry
        # would make its logits optimistic.
        queries, zero_shot = self._held_out_zero_shot(rng)
        logits = tip_adapter_logits(
            self.logit_scale * zero_shot,
            self.cache_keys_[queries] @ self.cache_keys_.T,
            cache_indicator(self.cache_labels_, len(self.classes_)),
            self.alpha_,
            self.beta_,
            own_entries=queries,
        )
        return logits, self.cache_labels_[queries]

    def _logits(self, X):
        # In blocks of queries, so that memory is bounded whatever the cache size.
        indicator = cache_indicator(self.cache_labels_, len(self.classes_))
        block = max(1, _KERNEL_BLOCK // len(self.cache_keys_))
        logits = [
            self._block_logits(X[start : start + block], indicator)
            for start in range(0, len(X), block)
        ]
        return np.concatenate(logits) if logits else np.empty((0, len(self.classes_)))

    def _block_logits(self, X, indicator):
        queries = l2_normalize(X)
        return tip_adapter_logits(
            self.logit_scale * queries @ self.prototypes_.T,
            queries @ self.cache_keys_.T,
            indicator,
            self.alpha_,
            self.beta_,
        )
