"""The case contract and numpy at the model's 256 grid: ``Case``, ``CaseError``, ``check_boxes``, ``label_dtype``
(``case``), the official resize/normalise/pad and box maths (``preprocess``, ``postprocess``), seconds per stage
(``timing``), optional dependencies (``optional``) and atomic writes (``atomic``). No torch, no file formats."""
