"""Agreement of the approximate OpenVINO precisions (bf16, int8) with fp32 on the shared cases.

For every case in ../shared/cases/imgs: segment with the OpenVINO engine at f32, bf16 and int8 (int8 if the
export has it: ``medsam-lite export --int8 CASES_DIR``) and print, against the f32 output, the fraction of
equal voxels, the smallest and the mean per-label Dice, and the seconds each took in this process.

Usage: python scripts/precision_agreement.py --export-dir work_dir/openvino [--shared ../shared] [--only SUBSTRING]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from medsam_lite.io.challenge import load_case
from medsam_lite.engines.manifest import read_manifest
from medsam_lite.engines.openvino_engine import OpenVINOEngine
from evaluation.fidelity import compare
from medsam_lite.pipeline.segment import segment_2d, segment_3d


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export-dir", type=Path, default=Path("work_dir/openvino"))
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    manifest = read_manifest(args.export_dir)
    if manifest is None:
        print(f"no export in {args.export_dir}", file=sys.stderr)
        return 2
    precisions = ["f32", "bf16"] + (["int8"] if manifest.int8_encoder else [])
    engines = {p: OpenVINOEngine(args.export_dir, precision=p) for p in precisions}
    header = f"{'case':<54}{'f32 s':>8}" + "".join(f"{p + ' s':>8}{'voxels':>10}{'minDice':>9}{'meanDice':>9}" for p in precisions[1:])
    print(header)
    print("-" * len(header), flush=True)
    summary = {p: [] for p in precisions[1:]}
    for path in sorted((args.shared / "cases" / "imgs").glob("*.npz")):
        if args.only not in path.name:
            continue
        case = load_case(path)
        run = segment_3d if case.is_3d else segment_2d
        results, seconds = {}, {}
        for p, engine in engines.items():
            start = time.perf_counter()
            results[p] = run(engine, case.image, case.boxes, dtype=case.label_dtype)
            seconds[p] = time.perf_counter() - start
        line = f"{path.name:<54}{seconds['f32']:>8.2f}"
        for p in precisions[1:]:
            agreement = compare(results[p], results["f32"])
            dice = list(agreement.label_dice.values()) or [1.0]
            summary[p].append((agreement.voxels, min(dice), float(np.mean(dice)), seconds[p] / seconds["f32"]))
            line += f"{seconds[p]:>8.2f}{agreement.voxels:>10.6f}{min(dice):>9.4f}{np.mean(dice):>9.4f}"
        print(line, flush=True)
    for p, rows in summary.items():
        if rows:
            a = np.array(rows)
            print(f"{p}: mean voxel agreement {a[:, 0].mean():.6f}, worst label Dice {a[:, 1].min():.4f}, "
                  f"mean label Dice {a[:, 2].mean():.4f}, time vs f32 {a[:, 3].mean():.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
