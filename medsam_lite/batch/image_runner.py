"""The case pipeline for your own images: read, make the case, segment with the same engines and schedule as
``predict``, write ``<case>.nii.gz`` (input geometry) or ``<case>.png`` (2D pictures) and ``<case>.json``
(the boxes and labels used). One result record per image, as ``runner.compute_case`` and ``runner.write_case``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from medsam_lite.core.case import CaseError
from medsam_lite.engines.base import Engine
from medsam_lite.io.image_case import ImageCase, ImageOptions, image_case
from medsam_lite.io.image import ImageData, ImageError, case_name
from medsam_lite.core.atomic import write_with
from medsam_lite.batch.runner import CaseResult, timed, write_error_message
from medsam_lite.pipeline.case import segment_case
from medsam_lite.core.timing import stage


def output_name(path: Path) -> str:
    """``<case>.png`` for a raster picture, else ``<case>.nii.gz``."""
    from medsam_lite.io.image import RASTER_SUFFIXES, image_suffix

    return case_name(path) + (".png" if image_suffix(path) in RASTER_SUFFIXES else ".nii.gz")


def record(item: ImageCase, output: str, engine: str) -> dict:
    """What ``<case>.json`` holds: readable back by ``--boxes`` (boxes, labels, z_mid) plus provenance."""
    case, data = item.case, item.data
    out = {
        "image": data.source.name,
        "output": output,
        "shape_xyz": list(data.pixels.shape[::-1]) if not data.is_vector else list(data.pixels.shape[1::-1]),
        "modality": item.modality,
        "window": list(item.window) if item.window else None,
        "box_source": item.box_source,
        "engine": engine,
        "boxes": case.boxes.tolist(),
        "labels": item.labels.tolist(),
    }
    if case.is_3d:
        middles = case.z_middle if case.z_middle is not None else [int((b[5] - b[2]) / 2 + b[2]) for b in case.boxes]
        out["z_mid"] = [int(z) for z in middles]
        if case.until_empty:
            out["propagation"] = "until-empty"  # the boxes' z ranges are the bounds it went within
    if data.geometry is not None:
        out["geometry"] = {"origin": list(data.geometry.origin), "spacing": list(data.geometry.spacing),
                           "direction": list(data.geometry.direction)}
    return out


def json_lines(value: dict) -> str:
    """A JSON object with one key per line and each value compact (a box per line in ``boxes``)."""
    def compact(v):
        if isinstance(v, list) and v and all(isinstance(x, list) for x in v):
            return "[\n" + ",\n".join("  " + json.dumps(x) for x in v) + "\n ]"
        return json.dumps(v)

    return "{\n" + ",\n".join(f" {json.dumps(k)}: {compact(v)}" for k, v in value.items()) + "\n}\n"


def write_labels(path: Path, labels: np.ndarray, data: ImageData) -> None:
    """PNG for a raster picture, else a medical image with the input's geometry (by ``path``'s suffix)."""
    if path.suffix == ".png":
        from medsam_lite.io.raster import write_labels_png

        write_labels_png(path, labels)
    else:
        from medsam_lite.io.medical import write_labels_medical

        write_labels_medical(path, labels, data.geometry)


def run_image(engine: Engine, path: Path, output_dir: Path, options: ImageOptions,
              overlay_dir: Path | None = None) -> CaseResult:
    """Segment one image and write its outputs; errors become a ``failed`` result naming the problem.

    Written in this order, each atomically: overlay, ``<case>.json``, then the mask, so that an existing mask
    means a finished case."""
    return timed(engine, lambda: _run_image(engine, path, output_dir, options, overlay_dir))


def _run_image(engine: Engine, path: Path, output_dir: Path, options: ImageOptions,
               overlay_dir: Path | None) -> CaseResult:
    from medsam_lite.io.read import read_image
    from medsam_lite.io.overlay import save_overlay

    name = path.name
    output = output_dir / output_name(path)
    writing = output
    try:
        with stage("load"):
            data = read_image(path, options.series)
            item = image_case(data, options)
        segs = segment_case(engine, item.case)
        with stage("write"):
            labels = item.label_values(segs)
            if overlay_dir is not None:
                writing = overlay_dir / f"{item.case.name}.png"
                save_overlay(writing, item.case.image, segs, item.case.boxes)
            writing = output_dir / f"{data.name}.json"
            text = json_lines(record(item, output.name, engine.name))
            write_with(writing, lambda handle: handle.write(text), mode="w")
            writing = output
            write_labels(output, labels, data)
    except (CaseError, ImageError) as exc:
        return CaseResult(name, "failed", message=str(exc))
    except MemoryError:
        return CaseResult(name, "failed", message="out of memory")
    except OSError as exc:
        return CaseResult(name, "failed", message=write_error_message(exc, writing))
    except Exception as exc:  # one broken image must not stop the others
        return CaseResult(name, "failed", message=f"unexpected {type(exc).__name__}: {exc}")
    return CaseResult(name, "ok", boxes=len(item.case.boxes), warnings=item.case.warnings, notes=item.notes)


def run_images(engine: Engine, paths: Iterable[Path], output_dir: Path, options: ImageOptions,
               overwrite: bool = False, overlay_dir: Path | None = None) -> Iterator[CaseResult]:
    """Every image in turn; one whose mask exists is skipped unless ``overwrite``."""
    for path in paths:
        if not overwrite and (output_dir / output_name(path)).exists():
            yield CaseResult(path.name, "skipped", message="output exists (use --overwrite to redo it)")
            continue
        result = run_image(engine, path, output_dir, options, overlay_dir)
        result.model, result.precision = engine.name, engine.precision_label
        yield result
