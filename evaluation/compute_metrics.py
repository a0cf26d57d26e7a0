"""``python -m evaluation.compute_metrics``: the official script's flags, our implementation.

    python -m evaluation.compute_metrics -s SEG_DIR -g GT_DIR -csv_dir metrics.csv [-num_workers N] [-nsd False]

Unlike the official script (whose ``-nsd`` is parsed with ``type=bool``, so that ``-nsd False`` still
computes NSD), ``-nsd False`` really turns NSD off.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .report import run_evaluation


def _truthy(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DSC and NSD of segmentations against ground truth (challenge rules)")
    parser.add_argument("-s", "--seg_dir", default="test_demo/segs", type=Path)
    parser.add_argument("-g", "--gt_dir", default="test_demo/gts", type=Path)
    parser.add_argument("-csv_dir", default="test_demo/metrics.csv", type=Path)
    parser.add_argument("-num_workers", type=int, default=1)
    parser.add_argument("-nsd", default=True, type=_truthy, help="False: DSC only")
    parser.add_argument("--spacing-order", choices=["stored", "zyx"], default="stored")
    parser.add_argument("--summary-json", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        return run_evaluation(args.seg_dir, args.gt_dir, args.csv_dir, nsd=args.nsd, workers=args.num_workers,
                              spacing_order=args.spacing_order, summary_json=args.summary_json)
    except KeyboardInterrupt:  # as medsam-lite evaluate: one line, not a traceback
        print("stopped by Ctrl+C before it finished; nothing half-written was left (run the same command again)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
