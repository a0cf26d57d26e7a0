from medsam_lite.cli import entry

entry()
