"""medsam-lite: exact, fast CPU inference of LiteMedSAM. ``from medsam_lite import Predictor`` (and
``segment_npz``, ``segment_folder``) is the Python API, imported only when first used, so that
``import medsam_lite`` stays cheap for the command line."""

_API = {"Predictor": "medsam_lite.pipeline.predictor", "segment_npz": "medsam_lite.pipeline.predictor",
        "segment_folder": "medsam_lite.batch.runner"}


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'medsam_lite' has no attribute {name!r}")


__all__ = list(_API)
