"""Folders of files -> files: challenge cases (``runner.run_folder``, ``runner.segment_folder``), your own images
(``image_runner``), which files and which shard (``folder``), inputs protected and memory checked (``guards``),
a model per modality (``model_map``) and the int8 encoder calibrated on a folder (``int8``)."""
