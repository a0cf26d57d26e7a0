"""Optional dependencies: saying in one paragraph what is missing and the command that installs it.

The OpenVINO runtime path needs numpy, OpenCV and OpenVINO only; torch (with onnx for the export) is an
extra, so a step that needs it checks first instead of failing with a traceback deep inside.
"""
from __future__ import annotations

import importlib.util

TORCH_EXTRA = 'pip install -e ".[torch]"'  # from the project folder; torch==2.13.0, a CPU build


class MissingDependency(RuntimeError):
    """A step needs a package that is not installed; the message names it and the install command."""


def missing(*modules: str) -> list[str]:
    """Those of ``modules`` that cannot be imported here (checked without importing them)."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def require_torch(step: str, modules: tuple[str, ...] = ("torch",), hint: str = "") -> None:
    """Raise MissingDependency naming ``step`` when any of ``modules`` (torch, and onnx for the export) is absent."""
    absent = missing(*modules)
    if absent:
        names = " and ".join(absent)
        raise MissingDependency(
            f"{step} needs {names}, which {'is' if len(absent) == 1 else 'are'} not installed here. Install the torch "
            f"extra with `{TORCH_EXTRA}` in the medsam-lite folder (torch==2.13.0, a CPU build, about 700 MB; "
            f"other torch versions pull GBs of CUDA packages).{' ' + hint if hint else ''}"
        )
