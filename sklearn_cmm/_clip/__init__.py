"""The CLIP model layer: everything that touches open_clip, one concern per module.

* :mod:`.config`: model names, bundled models and ``.json`` configs (with their
  preprocessing);
* :mod:`.weights`: where the weights come from (tags, local checkpoints, bundled files);
* :mod:`.model`: loaded models, the process-wide model cache, image and text encoding;
* :mod:`.text_encoder`: :class:`~sklearn_cmm.CLIPTextEncoder`, the text side of a model
  for the classifiers, and the default model.

Only :mod:`.model` imports torch; nothing here imports open_clip until a model is used.
"""
