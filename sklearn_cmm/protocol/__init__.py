"""The few-shot benchmark protocol: feature caches, CoOp's shot draw, the paper tables.

``sklearn-cmm extract-features`` (:mod:`~sklearn_cmm.protocol.extract`) caches CLIP
features of a dataset in CoOp's layout (:mod:`~sklearn_cmm.protocol.datasets`);
``sklearn-cmm benchmark`` (:mod:`~sklearn_cmm.protocol.runner`) draws the few-shot sets
(:mod:`~sklearn_cmm.protocol.sampling`), tunes every method on the few-shot validation
set, scores the test set and compares with the published numbers
(:mod:`~sklearn_cmm.protocol.published`). :mod:`~sklearn_cmm.protocol.synthetic` writes
feature files with a modality gap, to run all of it without images.

Nothing here imports torch or open_clip at import time.
"""
