"""The methods of the benchmark and the demo, by name, with their validation search spaces.

:func:`make_classifier` builds an unfitted estimator from a method name and the cached text
side of a dataset; :func:`search_space` lists the hyper-parameter candidates that the
benchmark's protocol (:mod:`sklearn_cmm.protocol.runner`) fits on the few-shot training set
and compares on the few-shot validation set (``min(shots, 4)`` images a class, never the
test set). The spaces are small on purpose: every candidate is a full fit, the validation
set has 1 to 4 images a class, and the protocol runs 11 datasets x 5 shots x 3 seeds.

=================  ==============================  ============================================
name               estimator                       validation candidates (why)
=================  ==============================  ============================================
``zero-shot``      ZeroShotClassifier              none: nothing to tune.
``linear-probe``   Normalizer, StandardScaler,     ``C`` in {0.01, 0.1, 1}: the regularisation is
                   LogisticRegression              the one knob of CLIP's linear probe (CoOp
                                                   searches it on validation too). Features are
                                                   L2-normalised then standardised: on unit
                                                   features with 1000 classes the gradient at
                                                   zero is below L-BFGS's tolerance and the fit
                                                   stops before its first step (chance level).
``tip-adapter``    TipAdapterClassifier            ``alpha`` in {1, 3} x ``beta`` in {1, 5.5}:
                                                   Tip-Adapter's own protocol grid-searches
                                                   these two on validation; the corners of its
                                                   usual range (defaults 1 and 5.5 included).
                                                   Its default ``search="cv"`` (leave-one-out
                                                   on the shots) is off: with 16,000 shots its
                                                   (shots x shots) kernel makes each trial cost
                                                   a full ImageNet prediction.
``tip-adapter-f``  TipAdapterClassifier(train)     its defaults only: the keys are trained
                                                   (``max_iter=100`` full-batch AdamW steps)
                                                   on four validation folds of the shots and
                                                   on all of them, and ``alpha``, ``beta`` are
                                                   searched (``search="cv"``) on the folds'
                                                   held-out shots (the authors search them on
                                                   validation data);
                                                   the folds also decide whether the trained
                                                   keys beat the cache. Training dominates the
                                                   cost: a step is ``~6 N^2 dim`` flops for
                                                   ``N`` shots (ImageNet's 16,000 shots want a
                                                   GPU).
``cmm``            CrossModalMappingClassifier     the closed form alone (``max_iter=0``), and
                                                   the refinement with ``triplet_weight`` in
                                                   {0, 1} (other settings at their defaults):
                                                   CMM's global alignment, then with and
                                                   without its local (triplet) alignment; the
                                                   val set says which parts help a dataset.
``semobridge``     SeMoBridgeClassifier            6 blends: the few-shot terms' weight
                                                   ``lambda2 = lambda3`` in {0.1, 0.3, 1} (how
                                                   far to trust the shots over the text) x the
                                                   sharpness ``alpha = beta = gamma`` in {1, 4}
                                                   (``search=None``);
                                                   and ``search="cv"``, 50 random draws of all
                                                   7 weights in the authors' ranges scored
                                                   leave-one-out on the shots. A closed-form
                                                   fit is cheap, so the 6 blends are fits; the
                                                   authors' 7-weight search (1000 trials on the
                                                   full val split) does not fit 1-4 val images
                                                   a class. LOO is degenerate at 1 shot (a
                                                   class without its only shot), where the
                                                   grid takes over; 50 draws because each
                                                   costs ~0.7 s at ImageNet scale.
``semobridge-t``   SeMoBridgeClassifier(train)     ``search="cv"`` (50 draws) only: training
                                                   (up to ``max_iter=1000`` AdamW steps, the
                                                   checkpoint chosen on two validation folds
                                                   of the shots) dominates; the blend is
                                                   searched on the folds' held-out scores.
=================  ==============================  ============================================

The protocol's ``--set METHOD.PARAM=VALUE`` changes a parameter for every candidate that
does not set it itself (e.g. fewer SeMoBridge-T steps on a CPU); the candidates' own
values still vary.

Text enters every text-using method as arrays (``text_features`` one row per class in the
order of ``np.unique(y)``, plus ``text_projection`` for SeMoBridge), so no CLIP model is
loaded here.
"""

from dataclasses import dataclass, field

from sklearn.model_selection import ParameterGrid

from ..baselines import TipAdapterClassifier, ZeroShotClassifier


def _linear_probe(**params):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler

    return make_pipeline(Normalizer(), StandardScaler(), LogisticRegression(**params))


def _cmm(**params):
    from ..cmm import CrossModalMappingClassifier

    return CrossModalMappingClassifier(**params)


def _semobridge(**params):
    from ..semobridge import SeMoBridgeClassifier

    return SeMoBridgeClassifier(**params)


@dataclass(frozen=True)
class Method:
    """A named method: how to build it and what the protocol tunes on validation.

    Attributes
    ----------
    name : str
        Name on the command line.
    label : str
        Name in tables (the published tables' name where there is one).
    build : callable
        ``build(**params)`` returns an unfitted estimator.
    defaults : dict
        Parameters this method always gets (before the candidate's and the overrides).
    grid : dict of str -> list
        Candidates: every combination of these values (:class:`ParameterGrid`)...
    extra : tuple of dict
        ...followed by these candidates. Both empty: a single candidate, ``{}``.
    uses_text : bool
        Whether it takes ``text_features``.
    """

    name: str
    label: str
    build: object
    defaults: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    extra: tuple = ()
    uses_text: bool = True


METHODS = {
    m.name: m
    for m in [
        Method("zero-shot", "Zero-shot CLIP", ZeroShotClassifier),
        Method("linear-probe", "Linear probe", _linear_probe,
               defaults={"max_iter": 300}, grid={"C": [0.01, 0.1, 1.0]}, uses_text=False),
        Method("tip-adapter", "Tip-Adapter", TipAdapterClassifier,
               grid={"alpha": [1.0, 3.0], "beta": [1.0, 5.5], "search": [None]}),
        Method("tip-adapter-f", "Tip-Adapter-F", TipAdapterClassifier,
               defaults={"train": True}),
        Method("cmm", "CMM", _cmm,
               grid={"triplet_weight": [0.0, 1.0]}, extra=({"max_iter": 0},)),
        Method("semobridge", "SeMoBridge", _semobridge,
               extra=(*({"lambda2": w, "lambda3": w, "alpha": s, "beta": s, "gamma": s,
                         "search": None}
                        for w in (0.1, 0.3, 1.0) for s in (1.0, 4.0)),
                      {"search": "cv", "n_search_trials": 50})),
        Method("semobridge-t", "SeMoBridge-T", _semobridge,
               defaults={"train": True}, extra=({"search": "cv", "n_search_trials": 50},)),
    ]
}


def get_method(name):
    """The :class:`Method` called ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"Unknown method {name!r}; known: {', '.join(METHODS)}.") from None


def search_space(name):
    """The validation candidates of a method: a list of parameter dicts (at least ``{}``)."""
    method = get_method(name)
    candidates = list(ParameterGrid(method.grid)) if method.grid else []
    candidates += [dict(c) for c in method.extra]
    return candidates or [{}]


def _param_name(estimator, valid, key):
    """``key`` as ``estimator`` names it (a pipeline's last step takes bare names), or None."""
    if key in valid:
        return key
    if hasattr(estimator, "steps") and f"{estimator.steps[-1][0]}__{key}" in valid:
        return f"{estimator.steps[-1][0]}__{key}"
    return None


def make_classifier(
    name,
    *,
    text_features=None,
    text_projection=None,
    random_state=None,
    device="auto",
    **overrides,
):
    """An unfitted estimator of the method called ``name``.

    Parameters
    ----------
    name : str
        One of ``zero-shot``, ``linear-probe``, ``tip-adapter``, ``tip-adapter-f``, ``cmm``,
        ``semobridge``, ``semobridge-t``.
    text_features : array-like of shape (n_classes, dim) or None, default=None
        Class text prototypes, one row per class in the order of ``np.unique(y)``. With
        None the estimators' own default applies (``text_encoder="clip"``).
    text_projection : array-like of shape (width, dim) or None, default=None
        CLIP's text projection, for SeMoBridge's bridge.
    random_state : int, RandomState instance or None, default=None
        Passed to every estimator that has it.
    device : str, default="auto"
        Torch device of the trained methods (Tip-Adapter-F, CMM, SeMoBridge-T); ignored
        by the others.
    **overrides
        Any estimator parameter (bare names for the linear probe's LogisticRegression,
        e.g. ``C=10``), applied last.

    Returns
    -------
    estimator : scikit-learn classifier
    """
    method = get_method(name)
    estimator = method.build()
    valid = estimator.get_params()
    offered = {"random_state": random_state, "device": device}
    if method.uses_text and text_features is not None:
        offered.update(text_features=text_features, text_encoder=None)
    if text_projection is not None:
        offered["text_projection"] = text_projection
    params = {}
    for key, value in offered.items():  # silently skipped where the estimator lacks them
        if (resolved := _param_name(estimator, valid, key)) is not None:
            params[resolved] = value
    for key, value in {**method.defaults, **overrides}.items():
        resolved = _param_name(estimator, valid, key)
        if resolved is None:
            raise ValueError(f"Method {name!r} has no parameter {key!r}.")
        params[resolved] = value
    return estimator.set_params(**params)
