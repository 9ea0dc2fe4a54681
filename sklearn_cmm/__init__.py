"""Few-shot image classification with CLIP, as scikit-learn estimators.

Cross-Modal Mapping and SeMoBridge close CLIP's modality gap on frozen embeddings so that
class text embeddings become good prototypes for images; zero-shot CLIP and Tip-Adapter
are the baselines.
"""

from ._clip.text_encoder import CLIPTextEncoder
from ._embeddings import CLIPEmbeddings
from ._persistence import skops_trusted_types
from .baselines import TipAdapterClassifier, ZeroShotClassifier
from .cmm import CrossModalMappingClassifier
from .featurizer import CLIPFeaturizer
from .metrics import modality_gap
from .pipeline import make_clip_pipeline
from .semobridge import SeMoBridgeClassifier
from .text import CLIP_IMAGENET_TEMPLATES

__version__ = "0.1.0"

__all__ = [
    "CLIP_IMAGENET_TEMPLATES",
    "CLIPEmbeddings",
    "CLIPFeaturizer",
    "CLIPTextEncoder",
    "CrossModalMappingClassifier",
    "SeMoBridgeClassifier",
    "TipAdapterClassifier",
    "ZeroShotClassifier",
    "make_clip_pipeline",
    "modality_gap",
    "skops_trusted_types",
]
