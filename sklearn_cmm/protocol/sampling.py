"""CoOp's few-shot draw: ``n_shots`` training and ``min(n_shots, 4)`` validation images a class.

CoOp (and Tip-Adapter, APE, SeMoBridge after it) seeds Python's ``random`` with the run's
seed, then, for the train split and then the val split, walks the classes in order of
their first appearance in the split and takes ``random.sample(items_of_class, k)``.
:func:`coop_few_shot` does exactly that with a private ``random.Random(seed)`` (the global
generator is never touched): the draw is a function of the split's labels, ``n_shots`` and
the seed only, so it is reproducible and independent of anything drawn before, for every
(dataset, shots, seed). With a split file and a fresh seed it picks the same images as
CoOp's ``shot_{n}-seed_{seed}.pkl`` files (``random.sample`` only looks at the length of
the population, so indices stand in for CoOp's ``Datum`` lists). A class with fewer
images than asked keeps all of them, as in CoOp.

Where a dataset has no validation split (ImageNet), CoOp validates on the test set. Here
the validation shots come instead from the training images not drawn as shots, with the
same generator, so validation never touches the test set and is disjoint from training.
"""

import random

import numpy as np


def _draw(labels, k, rng, exclude=None):
    """Indices of ``k`` items a class (all of them if fewer), classes in first-seen order."""
    by_label = {}
    for index, label in enumerate(np.asarray(labels).tolist()):
        if exclude is None or index not in exclude:
            by_label.setdefault(label, []).append(index)
    picked = []
    for items in by_label.values():
        picked.extend(rng.sample(items, k) if len(items) >= k else items)
    return np.asarray(picked, dtype=np.int64)


def coop_few_shot(train_labels, val_labels, n_shots, seed, *, n_val_shots=None):
    """Indices of the few-shot training and validation sets of one run.

    Parameters
    ----------
    train_labels : array-like of shape (n_train,)
        Labels of the train split, in the split's order.
    val_labels : array-like of shape (n_val,) or None
        Labels of the val split; None or empty when the dataset has none, and then the
        validation shots are drawn from the train split, disjoint from the training shots.
    n_shots : int
        Training images a class.
    seed : int
        The run's seed.
    n_val_shots : int or None, default=None
        Validation images a class; ``min(n_shots, 4)`` as in CoOp when None.

    Returns
    -------
    train : ndarray of int
        Indices into the train split, in CoOp's order.
    val : ndarray of int
        Indices into the val split, or into the train split when there is no val split.
    val_from_train : bool
        Whether ``val`` indexes the train split.
    """
    if n_shots < 1:
        raise ValueError(f"n_shots must be at least 1; got {n_shots}.")
    n_val_shots = min(n_shots, 4) if n_val_shots is None else n_val_shots
    rng = random.Random(seed)
    train = _draw(train_labels, n_shots, rng)
    if val_labels is not None and len(val_labels):
        return train, _draw(val_labels, n_val_shots, rng), False
    return train, _draw(train_labels, n_val_shots, rng, exclude=set(train.tolist())), True
