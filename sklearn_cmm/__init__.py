"""Few-shot image classification with CLIP, as scikit-learn estimators.

Cross-Modal Mapping and SeMoBridge close CLIP's modality gap on frozen embeddings so that
class text embeddings become good prototypes for images; zero-shot CLIP and Tip-Adapter
are the baselines.
"""

from .baselines import TipAdapterClassifier, ZeroShotClassifier
from .cmm import CrossModalMappingClassifier
from .featurizer import CLIPFeaturizer, CLIPTextEncoder
from .metrics import modality_gap
from .semobridge import SeMoBridgeClassifier
from .text import CLIP_IMAGENET_TEMPLATES

__version__ = "0.1.0"

__all__ = [
    "CLIP_IMAGENET_TEMPLATES",
    "CLIPFeaturizer",
    "CLIPTextEncoder",
    "CrossModalMappingClassifier",
    "SeMoBridgeClassifier",
    "TipAdapterClassifier",
    "ZeroShotClassifier",
    "modality_gap",
]
