"""Importing OpenVINO without its telemetry.

``import openvino`` loads OpenVINO's model-conversion tools, which send a usage event to Google Analytics on
every import unless the user opted out (``~/intel/openvino_telemetry``) or ``CI=true`` is set; the event is
sent from a forked process that can outlive ours while DNS times out (no network: tens of seconds, holding our
standard error open). A tool for medical images sends nothing anywhere: OpenVINO then uses its own telemetry
stub, and the import is about 40 ms faster (no urllib, http.client, email).
"""
from __future__ import annotations

import sys
from types import ModuleType


def import_openvino() -> ModuleType:
    """The ``openvino`` module, with its telemetry package blocked if openvino is not loaded yet."""
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # None: its import fails, OpenVINO's stub is used
    import openvino

    return openvino
