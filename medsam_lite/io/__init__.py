"""Reading and writing images in the formats people hold: NIfTI, NRRD, MetaImage and DICOM (SimpleITK) and
PNG/JPEG/BMP/TIFF (OpenCV), with their geometry; the intensity rules of the official preprocessing; box prompts
from JSON or a label map. SimpleITK is imported only when a medical format is read or written."""
