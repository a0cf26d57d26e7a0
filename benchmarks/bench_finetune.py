"""Fine-tuning on a laptop, measured: ``medsam-lite finetune`` on the shared hippocampus MR volumes, then the
validation cases segmented by ``predict`` (OpenVINO f32, as a user runs it) with the official weights and with
``best.pth``, scored by ``evaluate``'s code; and ``predict --model-map`` routing only ``MR_Hippocampus`` to the
fine-tuned model, to show the other modalities untouched (``../shared/cases_mm``).

Usage: python benchmarks/bench_finetune.py [--run-dir DIR] [--train decoder] [--epochs 3]
       [--samples-per-epoch 1400] [--lr 4e-4] [--max-train-cases 150] [--markdown]
A run folder that already holds a finished run (summary.json) is measured, not trained again. The embedding
cache of a new run is a fresh folder beside it, so that the time includes encoding every slice once.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _bench_stages():
    spec = importlib.util.spec_from_file_location("bench_stages", Path(__file__).with_name("bench_stages.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def link_cases(names: list[str], source: Path, target: Path) -> Path:
    """``target/imgs`` and ``target/gts`` with links to ``names`` in ``source``."""
    for sub in ("imgs", "gts"):
        (target / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            link = target / sub / name
            if not link.exists():
                link.symlink_to(source / sub / name)
    return target


def predict_and_score(checkpoint: Path, cases: Path, out: Path, model_map: Path | None = None) -> tuple[dict, float]:
    """``medsam-lite predict`` (the command, OpenVINO f32) then ``evaluate``'s per-case metrics: {case: (DSC, NSD)}."""
    from evaluation.runner import evaluate_case

    done = out.is_dir() and all((out / p.name).is_file() for p in (cases / "imgs").glob("*.npz"))
    command = [sys.executable, "-m", "medsam_lite", "predict", "-i", str(cases / "imgs"), "-o", str(out),
               "--checkpoint", str(checkpoint), "-q"]
    if model_map is not None:
        command += ["--model-map", str(model_map)]
    start = time.perf_counter()
    if not done:  # an earlier run of this script with the same --scratch wrote them
        subprocess.run(command, check=True)
    seconds = time.perf_counter() - start if not done else float("nan")
    scores = {}
    for path in sorted((cases / "gts").glob("*.npz")):
        row = evaluate_case(path.name, out, cases / "gts")
        scores[path.name] = (row.dsc, row.nsd)
    return scores, seconds


def mean(values) -> float:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "finetune" / "hippocampus")
    parser.add_argument("--others", type=Path, default=SHARED / "cases_mm", help="cases the map must leave alone")
    parser.add_argument("--official", type=Path, default=SHARED / "checkpoints" / "lite_medsam.pth")
    parser.add_argument("--run-dir", type=Path, default=None, help="[default: a new temporary folder]")
    parser.add_argument("--train", default="decoder")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples-per-epoch", type=int, default=1400)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--max-train-cases", type=int, default=150)
    parser.add_argument("--map-cases", type=int, default=5, help="validation cases in the --model-map check")
    parser.add_argument("--scratch", type=Path, default=None, help="work folder; predictions already there are reused")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    from medsam_lite.engines.store import store_dir
    from medsam_lite.engines.weights import checkpoint_sha256
    from medsam_lite.train import FinetuneConfig, finetune

    stages = _bench_stages()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    scratch.mkdir(parents=True, exist_ok=True)
    run_dir = args.run_dir or scratch / "run"
    if not (run_dir / "summary.json").is_file():
        config = FinetuneConfig(data=[str(args.data)], run_dir=str(run_dir), checkpoint=str(args.official),
                                train=args.train, epochs=args.epochs, samples_per_epoch=args.samples_per_epoch,
                                batch_size=args.batch_size, lr=args.lr, max_train_cases=args.max_train_cases,
                                cache_dir=str(run_dir.parent / f"{run_dir.name}-cache"))
        finetune(config)
    summary = json.loads((run_dir / "summary.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    split = json.loads((run_dir / "split.json").read_text())
    best = run_dir / "best.pth"

    val = link_cases(split["val"], args.data, scratch / "val")
    before, t_before = predict_and_score(args.official, val, scratch / "segs-official")
    after, t_after = predict_and_score(best, val, scratch / "segs-best")
    # the map: hippocampus cases to best.pth (its OpenVINO export, made by the run above), the rest to --checkpoint;
    # a few validation cases stand for all of them (their scores with each model are in the table above)
    mixed = link_cases(sorted(p.name for p in (args.others / "gts").glob("*.npz")), args.others, scratch / "mixed")
    routed_val = split["val"][: args.map_cases]
    link_cases(routed_val, args.data, mixed)
    model_map = scratch / "map.json"
    model_map.write_text(json.dumps({"MR_Hippocampus": {"checkpoint": str(best),
                                                         "export_dir": str(store_dir(checkpoint_sha256(best)))}}))
    official_all, _ = predict_and_score(args.official, mixed, scratch / "segs-mixed-official")
    routed, _ = predict_and_score(args.official, mixed, scratch / "segs-mixed-routed", model_map)
    others = [n for n in official_all if n not in routed_val]
    identical = sum(np.array_equal(np.load(scratch / "segs-mixed-official" / n)["segs"],
                                   np.load(scratch / "segs-mixed-routed" / n)["segs"]) for n in others)

    print(f"# {stages.cpu_name()}; {stages.cpu_features()}; {os.cpu_count()} cores")
    print(f"# run: {run_dir} ({config['train']}, {summary['train_cases']} training cases, {summary['samples']} samples, "
          f"{summary['epochs_run']} epochs of {config['samples_per_epoch']} samples, batch {config['batch_size']}, "
          f"lr {config['lr']}, cache {config['cache_precision']}): {summary['seconds'] / 60:.1f} min in all")
    rows = [("official weights", before, t_before), ("fine-tuned best.pth", after, t_after)]
    sep = " | "
    head = ["model", "validation cases", "DSC", "NSD", "predict s"]
    print(("| " + sep.join(head) + " |\n|" + "---|" * len(head)) if args.markdown else "  ".join(head))
    for name, scores, seconds in rows:
        cells = [name, str(len(scores)), f"{mean(v[0] for v in scores.values()):.4f}",
                 f"{mean(v[1] for v in scores.values()):.4f}", "-" if math.isnan(seconds) else f"{seconds:.0f}"]
        print(("| " + sep.join(cells) + " |") if args.markdown else "  ".join(cells))
    better = sum(after[n][0] > before[n][0] for n in before)
    print(f"\nper case: {better} of {len(before)} validation cases better in DSC; in-run validation (cached "
          f"embeddings) {summary['val_dsc_before']:.4f} -> {summary['val_dsc_after']:.4f}")
    print(f"--model-map {{MR_Hippocampus: best.pth}} on {len(others)} cases_mm cases + {len(routed_val)} hippocampus: "
          f"cases_mm DSC {mean(official_all[n][0] for n in others):.4f} (official) vs "
          f"{mean(routed[n][0] for n in others):.4f} (routed), {identical}/{len(others)} outputs identical; "
          f"{len(routed_val)} hippocampus cases DSC {mean(official_all[n][0] for n in routed_val):.4f} -> "
          f"{mean(routed[n][0] for n in routed_val):.4f} (best.pth alone: {mean(after[n][0] for n in routed_val):.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
