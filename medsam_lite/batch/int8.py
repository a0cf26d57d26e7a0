"""An int8 image encoder for an export, calibrated on a folder of challenge cases (NNCF post-training
quantisation of its linears; approximate, never the default): ``medsam-lite export --int8 CASES_DIR``.

Only the linears (MatMul: the attention's qkv and projections, the MLPs) are quantised; the convolutions keep
their weights and run under the compile's precision (the engine compiles the int8 encoder with the bf16 hint, so
on a CPU with bf16 units they run bf16). Measured on the 2-core AMD EPYC Zen 5 (official weights, the 42 labelled
cases of ``bench_precision.py``, calibrated on the 18 ``cases_mm`` slices, passes interleaved): every layer in int8
x2.15 over fp32, mean DSC -0.0061, CT lesion 000010 -0.159, fundus -0.097 (the convolutions' activations have the
widest ranges: stage 0's alone put a 0.45 relative error on the embedding); the linears alone in int8 with the rest
in bf16 x2.27, mean DSC +0.0010, NSD +0.0016, worst case -0.040 (a hippocampus volume), CT lesion 000010 -0.008,
fundus -0.002. The linears in int8 with the rest f32 are no faster than bf16 (x1.64): the convolutions are a
fifth of a pass.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from medsam_lite.core.case import CaseError
from medsam_lite.core.preprocess import image_to_model_input
from medsam_lite.engines.manifest import MODEL_FILES, read_manifest, write_manifest
from medsam_lite.io.challenge import load_case

FLOAT_OPS = ("Convolution", "GroupConvolution")  # OpenVINO op types the int8 encoder leaves unquantised


def calibration_inputs(folder: str | os.PathLike[str], limit: int = 64) -> list[np.ndarray]:
    """Model inputs (1, 3, 256, 256) from the challenge cases in ``folder``: each 2D image, and evenly spaced
    slices of each 3D volume that its boxes cover; at most ``limit``, spread over all cases."""
    per_case: list[list[np.ndarray]] = []
    for path in sorted(Path(folder).glob("*.npz")):
        try:
            case = load_case(path)
        except CaseError:
            continue
        if not case.is_3d:
            per_case.append([image_to_model_input(case.image)[0]])
            continue
        covered = sorted({z for b in case.boxes for z in range(int(b[2]), int(b[5]) + 1)})
        picks = [covered[i] for i in np.linspace(0, len(covered) - 1, min(len(covered), 8)).astype(int)] if covered else []
        per_case.append([image_to_model_input(case.image[z])[0] for z in picks])
    inputs: list[np.ndarray] = []
    round_ = 0
    while len(inputs) < limit and any(round_ < len(c) for c in per_case):
        inputs += [c[round_] for c in per_case if round_ < len(c)]
        round_ += 1
    return inputs[:limit]


def export_int8_encoder(out_dir: str | os.PathLike[str], calibration_dir: str | os.PathLike[str], samples: int = 64) -> int:
    """Add an int8 image encoder (NNCF post-training quantisation of the linears) to an existing export; returns
    the samples used."""
    from medsam_lite.engines.openvino_import import import_converter, import_openvino

    ov = import_openvino()
    import_converter()
    import nncf

    out = Path(out_dir)
    manifest = read_manifest(out)
    if manifest is None:
        raise FileNotFoundError(f"no export in {out}")
    inputs = calibration_inputs(calibration_dir, samples)
    if not inputs:
        raise ValueError(f"no usable .npz cases in {calibration_dir} for int8 calibration")
    model = ov.Core().read_model(out / MODEL_FILES["encoder"])
    nncf_log = logging.getLogger("nncf")  # on stdout, one INFO line per convolution it leaves out: keep warnings
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)
    try:
        quantized = nncf.quantize(model, nncf.Dataset(inputs), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(inputs), ignored_scope=nncf.IgnoredScope(types=list(FLOAT_OPS)))
    finally:
        nncf_log.setLevel(level)
    ov.save_model(quantized, out / MODEL_FILES["encoder_int8"], compress_to_fp16=False)
    shutil.rmtree(out / "cache-int8", ignore_errors=True)  # compiled from the int8 encoder just replaced
    manifest.int8_encoder, manifest.int8_linears_only = True, True
    write_manifest(out, manifest)
    return len(inputs)
