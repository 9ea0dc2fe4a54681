"""Helpers for tests that need a CLIP model and image files without any download.

The model is a 2-layer ViT at 32 px with open_clip's real tokenizer, built from a config of
our own with random (seeded) weights; the images are crops of scikit-learn's two sample
photos, saved as real JPEG files.
"""

import json

import numpy as np
import open_clip
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}

#: Labels of the images made by write_jpegs, one per sample photo.
PHOTO_LABELS = ("temple", "flower")


def write_config(path, config=TINY_CONFIG, **extra):
    """Write an open_clip model config (plus ``extra`` top-level keys) as JSON."""
    path.write_text(json.dumps({**config, **extra}))
    return path


def random_state_dict(name, seed=0):
    """State dict of open_clip model ``name`` with weights drawn from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return open_clip.create_model(name).state_dict()


def write_jpegs(folder, n_per_photo, seed=0):
    """Random crops of the two sample photos, resized, saved as JPEG files.

    Returns the paths and their labels (:data:`PHOTO_LABELS`).
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths, labels = [], []
    for photo, label in zip(load_sample_images().images, PHOTO_LABELS):
        height, width, _ = photo.shape
        for i in range(n_per_photo):
            h, w = rng.integers(120, height), rng.integers(120, width)
            top, left = rng.integers(0, height - h), rng.integers(0, width - w)
            size = (int(rng.integers(40, 90)), int(rng.integers(40, 90)))
            image = Image.fromarray(photo[top : top + h, left : left + w]).resize(size)
            path = folder / f"{label}_{i}.jpg"
            image.save(path, quality=90)
            paths.append(path)
            labels.append(label)
    return paths, labels


def reference_features(model, images, preprocess, normalize=True):
    """Embeddings by open_clip's own ``preprocess`` and ``encode_image``, one batch."""
    batch = torch.stack([preprocess(image) for image in images])
    with torch.inference_mode():
        return model.encode_image(batch, normalize=normalize).numpy()
