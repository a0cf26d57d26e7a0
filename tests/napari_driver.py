"""Drives napari with the napari-nninteractive plugin against a running `medsam-lite serve` (run under Xvfb by
tests/test_napari.py, a process of its own): the image as a layer, the plugin in Remote mode pointed at the
server's /nninteractive, Initialize, one rectangle on a slice, as a user would draw it; then the plugin's Labels
layer is saved (.npy) and the window captured (.png).

    python tests/napari_driver.py URL TOKEN VOLUME.npy Z Y0 X0 Y1 X1 OUT.npy OUT.png
"""
from __future__ import annotations

import sys
import time

import numpy as np


def main() -> None:
    url, token, volume_path = sys.argv[1:4]
    z, y0, x0, y1, x1 = (int(v) for v in sys.argv[4:9])
    labels_out, png_out = sys.argv[9:11]
    import napari
    from qtpy.QtWidgets import QApplication

    def wait(what: str, done, seconds: float = 240.0) -> None:
        deadline = time.monotonic() + seconds
        while not done():
            QApplication.processEvents()
            time.sleep(0.05)
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}")

    viewer = napari.Viewer(show=True)
    volume = np.load(volume_path)
    viewer.add_image(volume, name="CT", contrast_limits=(float(volume.min()), float(volume.min()) + 255))
    _, widget = viewer.window.add_plugin_dock_widget("napari-nninteractive", "nnInteractive")
    wait("the plugin", lambda: widget.image_selection.count() > 0, 30)
    widget.image_selection.setCurrentText("CT")
    widget.server_url_edit.setText(url)
    widget.api_key_edit.setText(token)
    assert widget._remote_mode, "a client-only install starts in Remote mode"
    widget.on_init()
    wait("the session and the box tool", lambda: widget.session is not None and widget.bbox_layer_name in viewer.layers)
    supported = widget.session.supported_interactions
    assert supported == {"bbox2d": True, "bbox3d": False, "points": False, "scribble": False, "lasso": False}, supported
    viewer.dims.set_point(0, z)
    # the corners a user drags from (y0, x0) to (y1 + 1, x1 + 1): the half-open box covering pixels y0..y1, x0..x1
    rectangle = np.array([[z, y0, x0], [z, y0, x1 + 1], [z, y1 + 1, x1 + 1], [z, y1 + 1, x0]], dtype=float)
    boxes = viewer.layers[widget.bbox_layer_name]
    boxes.add(rectangle, shape_type="rectangle")
    labels = viewer.layers[widget.label_layer_name]
    wait("the mask", lambda: np.any(labels.data))
    boxes.opacity = 0.15  # the box stays visible; the mask under it shows
    viewer.camera.center = (z, (y0 + y1) / 2, (x0 + x1) / 2)
    viewer.camera.zoom = 4.0 * viewer.camera.zoom
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    np.save(labels_out, np.asarray(labels.data))
    viewer.screenshot(png_out, canvas_only=False, flash=False)
    viewer.close()  # the plugin releases its lease as the window closes


if __name__ == "__main__":
    main()
