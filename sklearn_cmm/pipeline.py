"""make_clip_pipeline: a featurizer and a classifier that share one CLIP model."""

from sklearn.base import clone
from sklearn.pipeline import make_pipeline


def make_clip_pipeline(featurizer, classifier, *, memory=None, verbose=False):
    """``make_pipeline(featurizer, classifier)`` with the classifier's text from the same model.

    The classifiers' default ``text_encoder="clip"`` is the model of ``CLIPFeaturizer()``
    at its defaults; for any other model the classifier needs that model's text encoder.
    This sets it, on a clone of ``classifier`` (the argument is not modified), so that
    image and text features come from one model.

    The encoder is set once, here: ``set_params`` on the featurizer later does not reach
    it (another model or weights then raise at ``fit``, see the featurizer's *Text from
    the same model*). To search over models, search over whole pipelines, each made by
    this function: ``GridSearchCV(pipes[0], {"steps": [pipe.steps for pipe in pipes]})``.

    Parameters
    ----------
    featurizer : CLIPFeaturizer
        The image side.
    classifier : estimator with a ``text_encoder`` parameter
        One of the package's classifiers; its ``text_encoder`` becomes
        ``featurizer.text_encoder()``.
    memory : str, object with the joblib.Memory interface or None, default=None
        Passed to :func:`~sklearn.pipeline.make_pipeline`.
    verbose : bool, default=False
        Passed to :func:`~sklearn.pipeline.make_pipeline`.

    Returns
    -------
    pipeline : Pipeline

    Examples
    --------
    >>> from sklearn_cmm import CLIPFeaturizer, CrossModalMappingClassifier, make_clip_pipeline
    >>> pipe = make_clip_pipeline(CLIPFeaturizer("ViT-B-32", pretrained="laion2b_s34b_b79k"),
    ...                           CrossModalMappingClassifier())
    >>> pipe[-1].text_encoder
    CLIPTextEncoder(model='ViT-B-32', pretrained='laion2b_s34b_b79k')
    """
    classifier = clone(classifier).set_params(text_encoder=featurizer.text_encoder())
    return make_pipeline(featurizer, classifier, memory=memory, verbose=verbose)
