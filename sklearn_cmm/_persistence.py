"""The package's types for skops' allow-list of trusted types."""

import pathlib

from ._clip.text_encoder import CLIPTextEncoder
from ._embeddings import CLIPEmbeddings
from .baselines import TipAdapterClassifier, ZeroShotClassifier
from .cmm import CrossModalMappingClassifier
from .featurizer import CLIPFeaturizer
from .model_selection import FewShotSplit
from .semobridge import SeMoBridgeClassifier


def skops_trusted_types():
    """Names of the package's types that a fitted estimator or pipeline may contain.

    skops (and MLflow, which saves scikit-learn models with skops by default since 3.x)
    loads only types it trusts; it trusts numpy, scipy and scikit-learn's estimators, but
    no third-party types, and has no registry for them. Pass this list as
    ``skops.io.load(..., trusted=skops_trusted_types())`` or
    ``mlflow.sklearn.log_model(..., skops_trusted_types=skops_trusted_types())``. It
    names the estimators, :class:`~sklearn_cmm.CLIPTextEncoder` (a classifier's
    ``text_encoder``), :class:`~sklearn_cmm.CLIPEmbeddings` and
    :class:`~sklearn_cmm.model_selection.FewShotSplit` (a search's ``cv``) and
    :mod:`pathlib`'s concrete paths (``CLIPFeaturizer(pretrained=Path(...))``, under
    both of their module names: ``pathlib`` and, from Python 3.13, ``pathlib._local``, so
    that a file saved on one Python loads on the other); the fitted state of the
    estimators holds numpy arrays and builtins only. A search object also
    holds scikit-learn types that skops does not trust by default (its scorer,
    ``sklearn.metrics._scorer._PassthroughScorer``): check any file with
    ``skops.io.get_untrusted_types(file=...)`` before trusting what it lists.

    skops stores a :class:`~sklearn_cmm.CLIPEmbeddings` as a plain array: it loads with
    ``text_encoder=None``, the record of its model lost (results are the same, unchecked).

    Returns
    -------
    types : list of str
        Fully qualified type names (``module.QualifiedName``), sorted.

    Examples
    --------
    >>> from sklearn_cmm import skops_trusted_types
    >>> "sklearn_cmm.cmm.CrossModalMappingClassifier" in skops_trusted_types()
    True
    """
    types = [
        CLIPEmbeddings,
        CLIPFeaturizer,
        CLIPTextEncoder,
        CrossModalMappingClassifier,
        FewShotSplit,
        SeMoBridgeClassifier,
        TipAdapterClassifier,
        ZeroShotClassifier,
    ]
    paths = {f"{module}.{cls.__qualname__}" for cls in (pathlib.PosixPath, pathlib.WindowsPath)
             for module in ("pathlib", "pathlib._local", cls.__module__)}
    return sorted({f"{cls.__module__}.{cls.__qualname__}" for cls in types} | paths)
