"""Every format read or written, each a module: the challenge npz (``challenge.load_case``; the CVPR 2025 layout in
``layout2025``; headers without data in ``npy_header``), medical images with their geometry (``medical``,
SimpleITK, imported only when such a file is read or written) and pictures (``raster``, OpenCV), which reader
(``read``), the intensity rules of the official preprocessing (``intensity``), box prompts from JSON or a label
map (``prompts``), your image as a case (``image_case``), conversions (``convert``) and overlay PNGs (``overlay``).

To add a format: a reader returning ``image.ImageData`` (pixels plus geometry) and, if masks are written in it, a
writer taking labels and that geometry, in a module of its own; its suffixes in ``image.MEDICAL_SUFFIXES`` or
``image.RASTER_SUFFIXES`` and a branch in ``read.read_image`` (and in ``batch.image_runner.write_labels``); a test
that reads a file written by another tool and writes one back that the tool reads."""
from medsam_lite.core.lazy import lazy_exports

_EXPORTS = {
    "load_case": "challenge",
    "find_images": "read", "read_image": "read",
    "ImageOptions": "image_case", "image_case": "image_case",
    "to_nifti": "convert", "to_npz": "convert",
    "save_overlay": "overlay",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
