"""
The one-line pipeline: images in, few-shot classifier out
=========================================================

``make_clip_pipeline(CLIPFeaturizer(...), CrossModalMappingClassifier())`` takes images and
string labels; the classifier gets its class text prototypes from the same CLIP model as
the featurizer. Here the model is the small CLIP bundled with the package (trained by the
project on Fashion-MNIST), so the example runs offline; with a connected machine use
``CLIPFeaturizer("ViT-B-16", pretrained="openai")`` and image file paths.
"""

# %%
# Load the bundled held-out images and use the class names as labels.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay

from sklearn_cmm import CLIPFeaturizer, CrossModalMappingClassifier, ZeroShotClassifier, make_clip_pipeline
from sklearn_cmm.bundled import BUNDLED_MODEL, load_fashion_mnist_sample
from sklearn_cmm.model_selection import draw_shots

data = load_fashion_mnist_sample()
labels = np.asarray(data.target_names)[data.target]

# 16 labelled images per class to train on, the rest to test.
train, test = draw_shots(labels, n_shots=16, random_state=0)

# %%
# Zero-shot CLIP uses the class names alone; CMM also learns from the 16 shots.
# ``templates`` are the prompts the bundled model was trained with.
results = {}
for classifier in (
    ZeroShotClassifier(templates=data.templates),
    CrossModalMappingClassifier(templates=data.templates, random_state=0),
):
    # make_clip_pipeline gives the classifier the text side of the featurizer's model
    # (make_pipeline would do for CLIPFeaturizer() at its default model).
    pipeline = make_clip_pipeline(CLIPFeaturizer(BUNDLED_MODEL, pretrained="bundled"), classifier)
    pipeline.fit(data.images[train], labels[train])
    name = type(classifier).__name__
    results[name] = pipeline
    print(f"{name}: top-1 {pipeline.score(data.images[test], labels[test]):.3f}")

# %%
# Where CMM still errs.
ConfusionMatrixDisplay.from_estimator(
    results["CrossModalMappingClassifier"], data.images[test], labels[test],
    xticks_rotation=60, colorbar=False,
)
plt.tight_layout()
plt.show()
