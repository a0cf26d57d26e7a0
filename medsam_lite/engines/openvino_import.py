"""Importing OpenVINO without its telemetry, and without its model-conversion tools where none is converted.

``import openvino`` loads OpenVINO's model-conversion tools (``openvino.tools.ovc``: absl, email,
importlib.metadata; about 45 ms of a 2-core machine's start-up), which also send a usage event to Google
Analytics on every import unless the user opted out (``~/intel/openvino_telemetry``) or ``CI=true`` is set;
the event is sent from a forked process that can outlive ours while DNS times out (no network: tens of
seconds, holding our standard error open). A tool for medical images sends nothing anywhere: OpenVINO then
uses its own telemetry stub. Running an export needs only the runtime (``openvino.Core``), so the converter
is imported by ``import_converter`` alone (``medsam-lite export``).
"""
from __future__ import annotations

import sys
from types import ModuleType
from typing import Callable

CONVERTER = "openvino.tools.ovc"


def import_openvino() -> ModuleType:
    """The ``openvino`` module (runtime only when it is imported here first), telemetry blocked."""
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # None: its import fails, OpenVINO's stub is used
        sys.modules.setdefault(CONVERTER, None)  # openvino/__init__ skips convert_model on this ImportError
        try:
            import openvino  # noqa: F401
        finally:
            if sys.modules.get(CONVERTER, ...) is None:
                del sys.modules[CONVERTER]  # importable again, for import_converter
    import openvino

    return openvino


def import_converter() -> Callable:
    """OpenVINO's ``convert_model`` (ONNX -> ov.Model), telemetry blocked; also set as ``openvino.convert_model``
    as a plain ``import openvino`` would have (NNCF, the int8 export, may look for it there)."""
    openvino = import_openvino()
    from openvino.tools.ovc import convert_model

    openvino.convert_model = convert_model
    return convert_model
