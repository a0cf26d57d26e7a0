"""Wall time of ``medsam-lite predict`` per shared case, a fresh process per case, in several modes.

Modes (each a CLI invocation on a folder holding just that case):
- ``official``: our torch engine on the official script's schedule (an encoder pass per box per slice, a
  decoder call per box), with what the official script pays as a user runs it: torch, matplotlib and pandas
  imports and the dpi-300 matplotlib overlay it saves for every case;
- ``torch``: our default schedule (each slice encoded once) on the torch engine;
- ``openvino``, ``bf16``, ``int8``, ``mixed``, ``bf16-linears``: our default schedule on the OpenVINO engine
  (``--export-dir``, made by ``medsam-lite export``; int8 needs ``export --int8``).
Prints seconds per case and mode, the ratio official/mode, encoder passes and peak RSS of the process, and
a start-up row: the same command on a case with no boxes (no encoder pass).
Needs ``pip install matplotlib pandas`` for the official mode.

Usage: python benchmarks/bench_predict.py [--shared ../shared] [--modes official,torch,openvino]
       [--export-dir work_dir/openvino] [--only SUBSTRING] [--skip-official CASE_SUBSTRING ...] [--csv out.csv]
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from medsam_lite.engines import precision

MODES = {
    "official": ["--engine", "torch", "--schedule", "official"],
    "torch": ["--engine", "torch"],
    "openvino": ["--engine", "openvino"],
    # every approximate precision, named as --precision names it
    **{mode: ["--engine", "openvino", "--precision", mode] for mode in precision.MODES if mode != "f32"},
}


def mode_args(mode: str, export_dir: Path, overlay_dir: Path) -> list[str]:
    args = list(MODES[mode])
    if "openvino" in args:
        args += ["--export-dir", str(export_dir)]
    if mode == "official":
        args += ["--save-overlay", str(overlay_dir)]
    return args


def run_once(case: Path, checkpoint: Path, mode_args: list[str], threads: int | None) -> dict:
    """One fresh process on a folder with just ``case``: wall seconds, peak RSS (MiB), encoder passes, and the
    seconds per stage from its timing CSV."""
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs, timing = Path(tmp, "in"), Path(tmp, "out"), Path(tmp, "timing.csv")
        inputs.mkdir()
        os.symlink(case.resolve(), inputs / case.name)
        command = [sys.executable, "-m", "medsam_lite", "predict", "-i", str(inputs), "-o", str(outputs),
                   "--checkpoint", str(checkpoint), "--timing-csv", str(timing), "-q", *mode_args]
        if threads:
            command += ["--threads", str(threads)]
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        stderr = process.stderr.read().decode()
        process.stderr.close()
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{case.name}: predict failed: {stderr}")
        with open(timing) as handle:
            row = next(csv.DictReader(handle))
        stages = {k[: -len("_s")]: float(v) for k, v in row.items() if k.endswith("_s")}
        return {"seconds": seconds, "rss_mib": usage.ru_maxrss / 1024, "passes": int(row["slices_encoded"]),
                "stages": stages}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--checkpoint", default="lite_medsam.pth",
                        help="a file in ../shared/checkpoints [default: the official weights]")
    parser.add_argument("--modes", default="official,torch,openvino")
    parser.add_argument("--export-dir", type=Path, default=Path("work_dir/openvino"))
    parser.add_argument("--only", nargs="*", default=[""], help="only cases whose name contains one of these")
    parser.add_argument("--skip-official", nargs="*", default=[], help="cases (substrings) not run in 'official'")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--csv", type=Path, default=None, help="also write the table as CSV")
    args = parser.parse_args()
    modes = args.modes.split(",")
    cases = sorted(p for p in (args.shared / "cases" / "imgs").glob("*.npz") if any(o in p.name for o in args.only))
    checkpoint = args.shared / "checkpoints" / args.checkpoint
    overlay_dir = Path(tempfile.mkdtemp(prefix="official-overlays-"))
    args_of = {m: mode_args(m, args.export_dir, overlay_dir) for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp, "2DBox_empty_startup.npz")
        np.savez(empty, imgs=np.zeros((64, 64, 3), np.uint8), boxes=np.zeros((0, 4), np.int64))
        startup = {m: run_once(empty, checkpoint, args_of[m], args.threads) for m in modes}
    print("start-up (a case with no boxes, whole process): " + ", ".join(
        f"{m} {startup[m]['seconds']:.2f} s / {startup[m]['rss_mib']:.0f} MiB" for m in modes), flush=True)
    rows = []
    header = f"{'case':<54}" + "".join(f"{m + ' s':>12}{'passes':>8}{'MiB':>7}" for m in modes)
    header += "".join(f"{' official/' + m:>17}" for m in modes if m != "official")
    print(header)
    print("-" * len(header), flush=True)
    for case in cases:
        row = {"case": case.name}
        for mode in modes:
            if mode == "official" and any(s in case.name for s in args.skip_official):
                continue
            result = run_once(case, checkpoint, args_of[mode], args.threads)
            row.update({f"{mode}_s": result["seconds"], f"{mode}_passes": result["passes"], f"{mode}_mib": result["rss_mib"]})
        line = f"{case.name:<54}"
        for mode in modes:
            if f"{mode}_s" in row:
                line += f"{row[f'{mode}_s']:>12.2f}{row[f'{mode}_passes']:>8}{row[f'{mode}_mib']:>7.0f}"
            else:
                line += f"{'-':>12}{'-':>8}{'-':>7}"
        for mode in modes:
            if mode != "official":
                ratio = row.get("official_s", float("nan")) / row[f"{mode}_s"]
                row[f"ratio_{mode}"] = ratio
                line += f"{ratio:>17.2f}"
        print(line, flush=True)
        rows.append(row)
    for mode in modes:
        if mode == "official":
            continue
        for kind in ("2D", "3D"):
            ratios = [r[f"ratio_{mode}"] for r in rows if r["case"].startswith(kind) and "official_s" in r]
            if ratios:
                print(f"mean official/{mode} ratio, {kind}: {sum(ratios) / len(ratios):.2f} over {len(ratios)} case(s)")
    if args.csv:
        fields = sorted({k for r in rows for k in r}, key=lambda k: (k != "case", k))
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    shutil.rmtree(overlay_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
