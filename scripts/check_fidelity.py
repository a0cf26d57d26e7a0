"""Compare our segmentations with the official script's on every shared case that has a reference.

For each checkpoint in ../shared/checkpoints (the official weights against reference_official: the 15 cases of
cases/ and the 18 of cases_mm/; the two stand-ins against reference/ and reference_random/), runs our pipeline
on the cases of its reference folder and
prints whether the output is bit-identical, the voxel agreement and the smallest per-label Dice, then how many
cases were bit-identical with how many threads; exits 1 if any case misses the bar of ``evaluation.fidelity``
(>= 99.999 % voxels equal and every label's Dice >= 0.9999). Float results depend on the CPU's kernels and on
the thread count, so bit-identity is reported, not required.

Usage: python scripts/check_fidelity.py [--shared ../shared] [--engine torch|openvino] [--threads N]
                                        [--only SUBSTRING] [--checkpoints official,demo,random]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from medsam_lite.io.challenge import load_case
from medsam_lite.engines import create_engine
from evaluation.fidelity import MIN_LABEL_DICE, MIN_VOXEL_AGREEMENT, compare
from medsam_lite.pipeline.segment import segment_2d, segment_3d

PAIRS = {"official": ("lite_medsam.pth", "reference_official"), "demo": ("lite_medsam_demo.pth", "reference"),
         "random": ("lite_medsam_random.pth", "reference_random")}
CASE_FOLDERS = ("cases", "cases_mm")  # where a reference's case is, by its file name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--engine", default="torch", choices=["torch", "openvino"])
    parser.add_argument("--export-dir", type=Path, default=None,
                        help="openvino: an export of each checkpoint is made here (default: a temporary folder)")
    parser.add_argument("--only", default="", help="only cases whose name contains this")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of the engine [default: all]")
    parser.add_argument("--checkpoints", default="official,demo,random", help="which of official, demo, random")
    args = parser.parse_args()
    if not args.shared.is_dir():
        print(f"shared data not found at {args.shared}", file=sys.stderr)
        return 2
    header = f"{'checkpoint':<24} {'case':<54} {'identical':>9} {'voxels':>9} {'min Dice':>9} {'passes':>6} {'s':>7}  ok"
    print(header)
    print("-" * len(header))
    failures = identical = total = 0
    scratch = Path(tempfile.mkdtemp(prefix="fidelity-export-"))
    for checkpoint, reference in (PAIRS[which] for which in args.checkpoints.split(",")):
        path = args.shared / "checkpoints" / checkpoint
        export_dir = (args.export_dir or scratch) / Path(checkpoint).stem
        if args.engine == "openvino":
            from medsam_lite.engines.export import export_openvino

            export_openvino(path, export_dir)
        engine = create_engine(args.engine, path, export_dir, threads=args.threads).engine
        for ref_path in sorted((args.shared / reference / "segs").glob("*.npz")):
            if args.only not in ref_path.name:
                continue
            folder = next(f for f in CASE_FOLDERS if (args.shared / f / "imgs" / ref_path.name).is_file())
            case = load_case(args.shared / folder / "imgs" / ref_path.name)
            start, before = time.perf_counter(), engine.encoder_passes
            run = segment_3d if case.is_3d else segment_2d
            segs = run(engine, case.image, case.boxes, dtype=case.label_dtype)
            seconds = time.perf_counter() - start
            agreement = compare(segs, np.load(ref_path)["segs"])
            failures += not agreement.passes
            identical += agreement.identical
            total += 1
            print(
                f"{checkpoint:<24} {ref_path.name:<54} {str(agreement.identical):>9} {agreement.voxels:>9.6f} "
                f"{agreement.min_dice:>9.5f} {engine.encoder_passes - before:>6} {seconds:>7.1f}  "
                f"{'yes' if agreement.passes else 'NO'}",
                flush=True,
            )
    shutil.rmtree(scratch, ignore_errors=True)
    threads = args.threads or f"all ({os.cpu_count()} CPUs)"
    print(f"{identical}/{total} case(s) bit-identical to the official output ({args.engine}, threads: {threads})")
    print(f"bar: voxels >= {MIN_VOXEL_AGREEMENT}, every label Dice >= {MIN_LABEL_DICE}; {failures} case(s) below it")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
