"""DSC and NSD of a model on labelled cases, per case and per modality: what a user gets from `predict` +
`evaluate`, for any checkpoint, engine and precision.

Each folder holds challenge cases in ``imgs/`` and their ground truth in ``gts/`` (as ``../shared/cases``,
``../shared/cases_mm``, ``../shared/finetune/hippocampus``); only cases with ground truth count. Cases are
segmented as ``medsam-lite predict`` does (``runner.run_folder``, the engine chosen by ``create_engine`` as the
CLI does) and scored as ``medsam-lite evaluate`` does (``evaluation.runner.evaluate_case``, NSD at 2 mm). With
``--reference CSV`` (e.g. ``reference_official/official_metrics.csv``, the official script and
``compute_metrics.py``) each row shows that score and the difference. ``--markdown`` prints the tables for the
README.

Usage: python benchmarks/bench_accuracy.py [--cases DIR ...] [--sample N] [--checkpoint PATH] [--engine auto]
       [--export-dir DIR] [--precision f32|bf16|int8] [--reference CSV ...] [--csv OUT.csv] [--markdown]
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from evaluation.runner import CaseRow, evaluate_case, modality, summarise
from medsam_lite.engines import create_engine
from medsam_lite.engines.precision import MODES
from medsam_lite.batch.runner import run_folder

SHARED = Path(__file__).resolve().parents[2] / "shared"


def labelled_cases(folder: Path, sample: int | None) -> list[Path]:
    """The cases of ``folder/imgs`` that have ground truth in ``folder/gts``; ``sample``: that many, evenly
    spaced in name order (the same ones every run)."""
    cases = sorted(p for p in (folder / "imgs").glob("*.npz") if (folder / "gts" / p.name).is_file())
    if sample is not None and sample < len(cases):
        cases = [cases[i] for i in np.linspace(0, len(cases) - 1, sample).round().astype(int)]
    return cases


def read_reference(paths: list[Path]) -> dict[str, tuple[float | None, float | None]]:
    """case -> (DSC, NSD) from metrics CSVs (``case,dsc,nsd``; an empty field is no number)."""
    number = lambda text: float(text) if text not in ("", None) else None  # noqa: E731
    scores = {}
    for path in paths:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                scores[row["case"]] = (number(row.get("dsc")), number(row.get("nsd")))
    return scores


def _bench_stages():
    """benchmarks/bench_stages.py, whose CPU description this script shares."""
    spec = importlib.util.spec_from_file_location("bench_stages", Path(__file__).with_name("bench_stages.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def show(value: float | None, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "-"
    if signed:  # differences from a CSV rounded to 4 decimals: below half its last digit is no difference
        return "0" if abs(value) < 5e-5 else f"{value:+.4f}"
    return f"{value:.4f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, nargs="+", default=[SHARED / "cases", SHARED / "cases_mm"],
                        help="folders with imgs/ and gts/ [default: ../shared/cases ../shared/cases_mm]")
    parser.add_argument("--sample", type=int, default=None, help="at most N cases per folder, evenly spaced")
    parser.add_argument("--checkpoint", type=Path, default=None, help="weights [default: as predict finds them]")
    parser.add_argument("--engine", default="auto", choices=["auto", "openvino", "torch"])
    parser.add_argument("--export-dir", type=Path, default=None)
    parser.add_argument("--precision", default="f32", choices=list(MODES))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--reference", type=Path, nargs="*", default=[], help="metrics CSVs to compare with")
    parser.add_argument("--csv", type=Path, default=None, help="write the per-case rows here")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = parser.parse_args()

    choice = create_engine(args.engine, args.checkpoint, args.export_dir, args.precision, args.threads,
                           say=lambda line: print(line, file=sys.stderr))
    if hasattr(choice.engine, "ready"):  # OpenVINO: the encoder compiled
        choice.engine.ready()
    reference = read_reference(args.reference)
    stages = _bench_stages()
    print(f"# {choice.description}; weights sha256 {(choice.checkpoint_sha256 or '?')[:16]}...; "
          f"{stages.cpu_name()}; {stages.cpu_features()}")
    rows: list[tuple[str, CaseRow, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-accuracy-") as scratch:
        for folder in args.cases:
            cases = labelled_cases(folder, args.sample)
            segs = Path(scratch) / folder.name
            segs.mkdir()
            for result in run_folder(choice.engine, cases, segs, overwrite=True):
                if result.status != "ok":
                    print(f"ERROR {result.case}: {result.message}", file=sys.stderr)
                row = evaluate_case(result.case, segs, folder / "gts")
                rows.append((folder.name, row, result.seconds))
                print(f"{folder.name}/{row.case}: DSC {show(row.dsc)} NSD {show(row.nsd)} ({result.seconds:.1f} s)",
                      file=sys.stderr, flush=True)

    head = ["folder", "case", "modality", "DSC", "NSD", "official DSC", "official NSD", "dDSC", "dNSD", "s"]
    print(("| " + " | ".join(head) + " |\n|" + "---|" * len(head)) if args.markdown else "  ".join(head))
    for folder, row, seconds in rows:
        official = reference.get(row.case, (None, None))
        diff = [None if a is None or b is None else a - b for a, b in zip((row.dsc, row.nsd), official)]
        cells = [folder, row.case.removesuffix(".npz"), modality(row.case), show(row.dsc), show(row.nsd),
                 show(official[0]), show(official[1]), show(diff[0], True), show(diff[1], True), f"{seconds:.1f}"]
        print((f"| {' | '.join(cells)} |") if args.markdown else "  ".join(cells))
    summary = summarise([row for _, row, _ in rows])
    print()
    print("| modality | cases | DSC | NSD |\n|---|---|---|---|" if args.markdown else "modality  cases  DSC  NSD")
    for name, m in summary["modalities"].items():
        print(f"| {name} | {m['cases']} | {show(m['dsc'])} | {show(m['nsd'])} |" if args.markdown
              else f"{name:<14}{m['cases']:>4}  {show(m['dsc'])}  {show(m['nsd'])}")
    overall = summary["mean_over_modalities"]
    case_dsc = np.mean([r.dsc for _, r, _ in rows if r.dsc is not None and not math.isnan(r.dsc)])
    case_nsd = np.mean([r.nsd for _, r, _ in rows if r.nsd is not None and not math.isnan(r.nsd)])
    print(f"mean over modalities: DSC {show(overall['dsc'])}, NSD {show(overall['nsd'])}; mean over {len(rows)} "
          f"cases: DSC {case_dsc:.4f}, NSD {case_nsd:.4f}")
    if args.csv is not None:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["folder", "case", "modality", "dsc", "nsd", "seconds"])
            for folder, row, seconds in rows:
                writer.writerow([folder, row.case, modality(row.case), row.dsc, row.nsd, f"{seconds:.3f}"])
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    start = time.perf_counter()
    code = main()
    print(f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    sys.exit(code)
