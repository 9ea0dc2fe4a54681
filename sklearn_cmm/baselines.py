"""The baselines every few-shot CLIP table starts from: zero-shot CLIP and Tip-Adapter(-F)."""

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import FewShotClassifierBase, SearchedBlendMixin, class_prototypes, fill_doc
from ._device import check_device
from ._math.basic import every_class_left_out, l2_normalize, loo_prototype_cosine, view_rows
from ._math.search import MAX_HELD_OUT, held_out_subset, random_candidates
from ._math.semobridge import validation_folds
from ._math.tip_adapter import (
    cache_indicator,
    correct_counts,
    tip_adapter_logits,
)
from .text import CLIP_IMAGENET_TEMPLATES

#: Largest ``n_queries x n_cache`` kernel Tip-Adapter computes at once (32 MB of float64):
#: predictions and the search run in blocks of queries of this size.
_KERNEL_BLOCK = 2**22

#: Validation folds of Tip-Adapter-F's shots: each fold's cache holds about 3/4 of them.
N_VALIDATION_FOLDS = 4

#: AdamW's weight decay of Tip-Adapter-F (torch's default, as the authors'); it pulls
#: the keys' change back toward the cache.
WEIGHT_DECAY = 0.01


@fill_doc
class ZeroShotClassifier(FewShotClassifierBase):
    """CLIP zero-shot classification: the class whose text prototype is most similar.

    The logits are ``logit_scale * cos(x, t_c)`` with ``t_c`` the prompt-ensembled text
    prototype of class ``c``. The training images tell which classes exist and, with
    ``calibration="temperature"``, set the temperature of :meth:`predict_proba` (fitted
    on their logits: with no labelled images, fit on one dummy row per class with
    ``calibration=None``). Text-free (``text_encoder=None`` and no ``text_features``) it is
    a nearest-centroid classifier under cosine similarity, the centroids being the class
    means of the normalised images.

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
        n_views=1,
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
            n_views=n_views,
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
        # Image-mean prototypes: each shot against its class mean without itself (and
        # without its views), every other class's mean an image short as well (the user
        # guide, *Calibration at few shots*).
        keys = l2_normalize(X, dtype=np.float64)
        v = self.n_views
        cosines = loo_prototype_cosine(keys[::v], keys, y_encoded, len(self.classes_), n_views=v,
                                       every_class=True)
        return self.logit_scale * cosines, y_encoded[::v]

    def _logits(self, X):
        return self.logit_scale * l2_normalize(X) @ self.prototypes_.T


@fill_doc
class TipAdapterClassifier(SearchedBlendMixin, FewShotClassifierBase):
    """Tip-Adapter: zero-shot logits plus a cache model of the shots, training-free or trained.

    ``logits = logit_scale * cos(x, T) + alpha * exp(-beta * (1 - x_n @ K.T)) @ L``, with
    ``x_n`` the normalised query, ``T`` the class text prototypes, ``K`` the cache keys
    (the normalised training images) and ``L`` their one-hot labels. Text-free, ``T`` are
    the class means of the normalised images. With ``train=True`` (Tip-Adapter-F) the keys
    are fine-tuned on the shots by cross-entropy, starting from the cache; ``L`` stays
    fixed.

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
    search : {"cv"} or None, default="cv"
        ``"cv"`` chooses ``alpha`` and ``beta`` on held-out shots, from the given values
        and ``n_search_trials - 1`` random draws, ``alpha`` in [0, 10] and ``beta`` in
        [0.1, 10], ``beta`` taking ``ceil(sqrt(n_search_trials - 1))`` distinct values
        (each shared by as many ``alpha``). Training-free, by leave-one-out
        cross-validation on the training shots (each shot is classified by a cache
        without itself and without an image of every other class, so that every class's
        cache is a shot short, as at deployment all have the same shots); with trained
        keys, on the validation folds (see ``train``). The
        test set is never needed. Cost of the leave-one-out search, with
        ``m = min(n_shots_total, 1000)`` left-out shots (a random subset beyond 1000):
        one ``m x n_shots_total x n_features`` affinity product, one kernel of
        ``m x n_shots_total`` exponentials per distinct ``beta`` and an
        ``m x n_classes`` argmax per trial, in bounded memory. At 1000 classes x 16 shots
        (512-d, one core) that is some 1.4x the cost of scoring the ``m`` left-out shots
        once, which the default ``calibration`` also pays: the searched fit takes 2.7x
        the plain fit (18x a plain fit with ``calibration=None``, a mere normalisation;
        ``benchmarks/bench_search.py``). None uses ``alpha`` and ``beta`` as given: on
        the validation draws of three test beds it was up to 15 points less accurate at
        4 and 16 shots (user guide).
    n_search_trials : int, default=200
        Candidates tried by ``search="cv"``.
    train : bool, default=False
        Tip-Adapter-F: fine-tune the cache keys (initialised to the normalised shots) by
        ``max_iter`` full-batch AdamW steps (cosine learning-rate schedule from
        ``learning_rate``, weight decay 0.01 on the keys' change) on the cross-entropy of
        the shots' logits at the given ``alpha`` and ``beta``, each shot's own key left out
        of its logits. Whether training helps is decided on held-out shots: the shots of
        each class are dealt into 4 validation folds (classes of one shot are always
        trained on); for each fold, keys trained on the other folds' shots and the
        untrained keys classify the fold's shots, at the best candidate of ``search``
        (or the given weights). When the trained keys are more accurate, the keys are
        trained on all shots, ``alpha`` and ``beta`` are the folds' choice and
        ``predict_proba``'s temperature is fitted on the folds' held-out logits; otherwise
        (and when no class has two shots to validate on) the fit is the training-free one.
        Torch is imported only here. A step costs about ``6 n_shots_total^2 n_features``
        flops and memory for a few ``n_shots_total^2`` kernels (full batch): fine for
        thousands of shots, not for ImageNet's 16,000 on a CPU.
    max_iter : int, default=100
        AdamW steps of each training (one full batch each).
    learning_rate : float, default=1e-3
        AdamW's initial learning rate (the authors').
    device : str, default="auto"
        Torch device of the training (``"auto"``: the first GPU if any, else the CPU).
        Prediction always runs in float64 numpy.
    verbose : bool or int, default=False
        Show a progress bar during training.

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
    cache_keys_ : ndarray of shape (n_shots_total * n_views, n_features / n_views)
        The normalised training images (and their views: row ``i * n_views + k`` is
        view ``k`` of image ``i``), or the keys trained from them (``best_iter_ > 0``).
    cache_labels_ : ndarray of shape (n_shots_total * n_views,)
        Their class indices (into ``classes_``).
    alpha_, beta_ : float
        The weights used: the parameters, or the search's choice.
    search_score_ : float or None
        Held-out accuracy of the chosen weights on the shots they were searched on
        (``search="cv"``): leave-one-out, or the validation folds' with trained keys.
    n_iter_ : int
        Training steps of each training run: ``max_iter`` when the folds were trained, 0
        when no class had two shots; 1 without training (the cache is one pass;
        scikit-learn wants ``n_iter_ >= 1`` from every estimator with ``max_iter``).
    best_iter_ : int or None
        Training steps of the keys used: ``max_iter``, or 0 (the training-free cache);
        None without ``train``.
    validation_scores_ : ndarray of shape (2,) or None
        Pooled held-out accuracy of the folds' untrained and trained keys (the
        comparison that sets ``best_iter_``); None when nothing was validated.
    loss_curve_ : ndarray of shape (`best_iter_`,) or None
        The loss before each step of the final training; None without one.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    ZeroShotClassifier : The zero-shot part alone.
    SeMoBridgeClassifier : Bridges the shots into the text modality first.

    Notes
    -----
    Tip-Adapter-F as the authors train it differs in three ways. They train 20 epochs of
    batches of 256 augmented images on the keys of the averaged features of 10
    augmented copies (pass augmented views as extra rows for the like), keep the epoch
    of best test accuracy and search ``alpha`` and ``beta`` on a validation split (on
    the test set for ImageNet). Here training is full batch for a fixed number of steps,
    and both the decision to train and the weights come from validation folds of the
    shots: choosing them by leave-one-out on the shots the keys were trained on would
    be optimistic, since every key has learnt to classify the shot that is left out.

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
    >>> clf = TipAdapterClassifier(text_features=text, random_state=0)
    >>> clf.fit(X, y).score(X, y)
    1.0
    >>> trained = TipAdapterClassifier(text_features=text, train=True, random_state=0)
    >>> trained.fit(X, y).best_iter_ in (0, 100)
    True
    """

    _parameter_constraints = {
        **FewShotClassifierBase._parameter_constraints,
        "alpha": [Interval(Real, 0, None, closed="left")],
        "beta": [Interval(Real, 0, None, closed="left")],
        "logit_scale": [Interval(Real, 0, None, closed="neither")],
        "search": [StrOptions({"cv"}), None],
        "n_search_trials": [Interval(Integral, 1, None, closed="left")],
        "train": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "device": [str],
        "verbose": ["verbose"],
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
        search="cv",
        n_search_trials=200,
        train=False,
        max_iter=100,
        learning_rate=1e-3,
        device="auto",
        n_shots=None,
        n_views=1,
        random_state=None,
        calibration="temperature",
        n_jobs=None,
        verbose=False,
    ):
        super().__init__(
            text_features,
            classes=classes,
            class_names=class_names,
            templates=templates,
            text_encoder=text_encoder,
            n_shots=n_shots,
            n_views=n_views,
            random_state=random_state,
            calibration=calibration,
            n_jobs=n_jobs,
        )
        self.alpha = alpha
        self.beta = beta
        self.logit_scale = logit_scale
        self.search = search
        self.n_search_trials = n_search_trials
        self.train = train
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.device = device
        self.verbose = verbose

    def _fit(self, X, y_encoded, class_text, rng):
        check_device(self.device)  # also when nothing is trained
        n_classes = len(self.classes_)
        self.prototypes_, self.prototype_source_ = class_prototypes(
            X, y_encoded, n_classes, class_text
        )
        self.cache_keys_ = l2_normalize(X, dtype=np.float64)
        self.cache_labels_ = y_encoded
        self.alpha_, self.beta_, self.search_score_ = self.alpha, self.beta, None
        self.n_iter_, self.best_iter_, self.validation_scores_, self.loss_curve_ = (
            1, None, None, None
        )
        candidates = None
        if self.search == "cv":
            candidates = random_candidates(
                {"alpha": (0.0, 10.0), "beta": (0.1, 10.0)},
                {"alpha": self.alpha, "beta": self.beta},
                self.n_search_trials,
                rng,
                shared="beta",
            )
        if self.train:
            self._fine_tune(X, y_encoded, rng, candidates)
        if candidates is not None and not self.best_iter_:  # the training-free cache
            self._search(candidates, rng)

    def _search(self, candidates, rng):
        keys, labels = self.cache_keys_, self.cache_labels_
        queries, zero_shot = self._held_out_zero_shot(rng)
        own = queries * self.n_views
        accuracies = correct_counts(
            self.logit_scale * zero_shot, keys[own], keys, labels, labels[own],
            len(self.classes_), candidates, own_entries=self._held_out_entries(queries),
            block_entries=_KERNEL_BLOCK,
        ) / len(queries)
        best = int(np.argmax(accuracies))  # the first among equals: the defaults win ties
        self.alpha_, self.beta_ = candidates[best]["alpha"], candidates[best]["beta"]
        self.search_score_ = float(accuracies[best])

    def _fine_tune(self, X, y_encoded, rng, candidates):
        """Tip-Adapter-F: train the keys if validation folds of the shots say it helps."""
        n_classes, v = len(self.classes_), self.n_views
        folds = validation_folds(y_encoded[::v], n_classes, rng, n_folds=N_VALIDATION_FOLDS)
        if (folds < 0).all():  # no class of two shots: nothing to validate a training on
            self.n_iter_ = self.best_iter_ = 0
            return
        scored = candidates or [{"alpha": self.alpha, "beta": self.beta}]
        correct = np.zeros((2, len(scored)), dtype=int)  # untrained, trained keys
        held_out = []
        for k in np.unique(folds[folds >= 0]):
            # An image's views go with it; the held-out images' own embeddings are scored.
            train, test = np.repeat(folds != k, v), np.flatnonzero(folds == k) * v
            prototypes = self.prototypes_
            if self.prototype_source_ == "image_means":  # the means of the fold's cache
                prototypes = class_prototypes(X[train], y_encoded[train], n_classes, None)[0]
            keys = self.cache_keys_[train]
            trained = self._train_keys(keys, y_encoded[train], prototypes)[0]
            queries = self.cache_keys_[test]
            zero_shot = self.logit_scale * queries @ prototypes.T
            for row, fold_keys in enumerate((keys, trained)):
                correct[row] += correct_counts(
                    zero_shot, queries, fold_keys, y_encoded[train], y_encoded[test],
                    n_classes, scored, block_entries=_KERNEL_BLOCK,
                )
            held_out.append((queries, prototypes, trained, y_encoded[train], y_encoded[test]))
        accuracies = correct / np.count_nonzero(folds >= 0)
        best = np.argmax(accuracies, axis=1)  # the first among equals
        self.validation_scores_ = accuracies[[0, 1], best]
        self.n_iter_ = self.max_iter
        if self.validation_scores_[1] <= self.validation_scores_[0]:
            self.best_iter_ = 0  # the training-free cache, searched by leave-one-out
            return
        self.best_iter_ = self.max_iter
        self.cache_keys_, self.loss_curve_ = self._train_keys(
            self.cache_keys_, y_encoded, self.prototypes_
        )
        self.alpha_, self.beta_ = scored[best[1]]["alpha"], scored[best[1]]["beta"]
        if candidates is not None:
            self.search_score_ = float(self.validation_scores_[1])
        if self.calibration is not None:
            # Honest logits for the temperature, taken (and dropped) by _calibration_logits.
            self._held_out_logits = (
                np.concatenate([
                    _cache_logits(queries, prototypes, keys, labels, n_classes,
                                  self.logit_scale, self.alpha_, self.beta_)
                    for queries, prototypes, keys, labels, _ in held_out
                ]),
                np.concatenate([truth for *_, truth in held_out]),
            )

    def _train_keys(self, keys, labels, prototypes):
        """Keys trained from the unit shots ``keys`` on themselves, and the loss curve."""
        import torch

        from ._math.tip_adapter_loss import tip_adapter_f_loss
        from ._torch import (as_numpy, as_tensor, autograd_value_and_grad, minimize_full_batch,
                             resolve_device)

        device = resolve_device(self.device)
        queries = as_tensor(keys, device)
        zero_shot = self.logit_scale * queries @ as_tensor(prototypes, device).T
        labels_t = torch.as_tensor(labels, dtype=torch.int64, device=device)
        # Each query (a key, or a view) leaves out its image's keys.
        own = torch.as_tensor(self._own_entries(np.arange(len(labels)) // self.n_views),
                              device=device)
        delta = torch.zeros_like(queries, requires_grad=True)  # the keys' change

        def loss_fn():
            return tip_adapter_f_loss(
                zero_shot, queries, queries + delta, labels_t, labels_t, self.alpha,
                self.beta, own_entries=own,
            )

        losses = minimize_full_batch(
            delta, autograd_value_and_grad(delta, loss_fn), max_iter=self.max_iter,
            learning_rate=self.learning_rate, weight_decay=WEIGHT_DECAY, schedule="cosine",
            verbose=self.verbose, desc="Tip-Adapter-F",
        )
        # The float64 cache plus the float32 change: the start is the cache exactly.
        return keys + as_numpy(delta), losses

    def _own_entries(self, images):
        """``(len(images), n_views)`` cache rows of each image: its views."""
        return view_rows(images, self.n_views).reshape(len(images), self.n_views)

    def _held_out_entries(self, images):
        """The cache rows each held-out image leaves out: its views and those of an image of
        every other class of two or more (:func:`~sklearn_cmm._math.basic.every_class_left_out`,
        as its image-mean prototypes do), so that every class's cache is an image short.
        Left out of its own class only, the image's class has the one cache with a kernel
        term fewer, which understates it: the search then weighed the cache too little."""
        images = np.asarray(images)
        labels = self.cache_labels_[:: self.n_views]
        choice, left_out = every_class_left_out(labels, images, len(self.classes_))
        many = np.bincount(labels, minlength=len(self.classes_)) >= 2  # the others keep theirs
        others = np.stack([left_out[int(k)][many] for k in choice]).reshape(len(images), -1)
        # in its own class the image leaves out itself (its column, when it has one)
        column = np.cumsum(many) - 1
        own = np.flatnonzero(many[labels[images]])
        others[own, column[labels[images[own]]]] = images[own]
        per_image = np.column_stack([images, others])
        return view_rows(per_image.ravel(), self.n_views).reshape(len(images), -1)

    def _held_out_zero_shot(self, rng):
        """Shots to score by leave-one-out (at most ``MAX_HELD_OUT``) and their zero-shot
        cosines, image-mean prototypes leaving out the shot and an image of every other
        class (as :meth:`_held_out_entries` does)."""
        keys, labels, v = self.cache_keys_, self.cache_labels_, self.n_views
        queries = held_out_subset(len(keys) // v, rng, MAX_HELD_OUT)  # images
        if self.prototype_source_ == "text":
            return queries, keys[queries * v] @ self.prototypes_.T
        return queries, loo_prototype_cosine(keys[queries * v], keys, labels, len(self.classes_),
                                             queries, n_views=v, every_class=True)

    def _calibration_logits(self, X, y_encoded, class_text, rng):
        if "_held_out_logits" in self.__dict__:  # trained keys: the folds' held-out logits
            return self.__dict__.pop("_held_out_logits")
        # Leave-one-out logits at the chosen alpha and beta: a shot's own cache entry
        # would make its logits optimistic.
        queries, zero_shot = self._held_out_zero_shot(rng)
        own = queries * self.n_views
        logits = tip_adapter_logits(
            self.logit_scale * zero_shot,
            self.cache_keys_[own] @ self.cache_keys_.T,
            cache_indicator(self.cache_labels_, len(self.classes_)),
            self.alpha_,
            self.beta_,
            own_entries=self._held_out_entries(queries),
        )
        return logits, self.cache_labels_[own]

    def _logits(self, X):
        return _cache_logits(
            l2_normalize(X), self.prototypes_, self.cache_keys_, self.cache_labels_,
            len(self.classes_), self.logit_scale, self.alpha_, self.beta_,
        )


def _cache_logits(queries, prototypes, keys, labels, n_classes, logit_scale, alpha, beta):
    """Tip-Adapter logits of unit queries, in blocks of queries so that memory is bounded
    whatever the cache size."""
    indicator = cache_indicator(labels, n_classes)
    block = max(1, _KERNEL_BLOCK // len(keys))
    logits = [
        tip_adapter_logits(
            logit_scale * queries[start : start + block] @ prototypes.T,
            queries[start : start + block] @ keys.T,
            indicator,
            alpha,
            beta,
        )
        for start in range(0, len(queries), block)
    ]
    return np.concatenate(logits) if logits else np.empty((0, n_classes))
