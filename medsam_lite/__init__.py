"""medsam-lite: exact, fast CPU inference of LiteMedSAM. ``from medsam_lite import Predictor`` (and
``segment_npz``, ``segment_folder``) is the Python API (``medsam_lite.api``), imported only when first used, so
that ``import medsam_lite`` stays cheap for the command line."""

_API = ("Predictor", "segment_npz", "segment_folder")


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'medsam_lite' has no attribute {name!r}")


__all__ = list(_API)
