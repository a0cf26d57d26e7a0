"""One image or volume plus prompts, in memory -> labels: ``segment_2d``/``segment_3d`` (each slice encoded once,
boxes propagated through a volume; ``segment``), a checked case (``case.segment_case``), the official schedule
(``official``), SAM's point prompts (``prompting``) and automatic masks (``automask``), and the Python API's
``Predictor`` (``predictor``)."""
