"""The run folder: what a run leaves (``config.json``, ``split.json``, ``metrics.csv``, ``curves.png``,
``best.pth``, ``last.pt``, ``summary.txt``), checked before anything is computed, and written atomically so
that an interrupted run never leaves half a file.

``best.pth`` is a plain state dict in the official layout; ``last.pt`` holds what an exact ``--resume`` needs
(model, optimiser, scheduler, epoch, best score, patience, RNG states, split), saved from CPU tensors so that a
run started on a GPU resumes on a CPU.
"""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from medsam_lite.core.atomic import atomic_path, check_writable_dir

RUN_FILES = ("config.json", "split.json", "metrics.csv", "curves.png", "best.pth", "last.pt", "summary.txt",
             "summary.json", "val_cases.csv")
METRIC_FIELDS = ("epoch", "train_loss", "train_dice", "train_bce", "train_iou", "lr", "val_dsc", "seconds")


class RunDirError(Exception):
    """A run folder that cannot be used; the message says why and what to do."""


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Make sure ``run_dir`` can take this run: refuse one that holds a run (unless ``resume``/``overwrite``)
    and one that cannot be written; ``overwrite`` removes the earlier run's files (only those)."""
    holds_run = any((run_dir / name).exists() for name in RUN_FILES)
    if resume:  # a run stopped before its first last.pt (while encoding the cache) starts again from its config
        if not (run_dir / "config.json").is_file():
            raise RunDirError(f"{run_dir}: nothing to resume (no config.json); start a run with -o {run_dir}")
    elif holds_run and not overwrite:
        raise RunDirError(f"{run_dir} already holds a run; continue it with --resume {run_dir}, or start again with "
                          "--overwrite")
    try:
        check_writable_dir(run_dir)
    except OSError as exc:
        raise RunDirError(f"{run_dir}: cannot write the run folder ({exc.strerror or exc})") from exc
    if overwrite and not resume:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)


def save_atomic(path: Path, write) -> None:
    """``write(tmp_path)`` into ``core.atomic``'s temporary path (same suffix, for writers that go by it), then
    renamed over ``path``."""
    with atomic_path(path, path.suffix) as tmp:
        write(tmp)


def write_metrics(path: Path, rows: list[dict]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRIC_FIELDS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _fmt(row.get(k)) for k in METRIC_FIELDS})

    save_atomic(path, write)


def _fmt(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def draw_curves(path: Path, rows: list[dict]) -> None:
    """curves.png: training loss (left) and validation DSC (right) per epoch, with the best epoch marked."""
    panel_w, panel_h, margin = 420, 300, 50
    canvas = np.full((panel_h + 2 * margin, 2 * (panel_w + 2 * margin), 3), 255, np.uint8)
    panels = [("training loss", "train_loss", (40, 40, 200)), ("validation DSC", "val_dsc", (30, 140, 30))]
    for i, (title, key, colour) in enumerate(panels):
        x0 = i * (panel_w + 2 * margin) + margin
        points = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
        cv2.rectangle(canvas, (x0, margin), (x0 + panel_w, margin + panel_h), (0, 0, 0), 1)
        cv2.putText(canvas, title, (x0, margin - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        if not points:
            continue
        xs, ys = np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)
        lo, hi = float(ys.min()), float(ys.max())
        lo, hi = (lo - 0.05, hi + 0.05) if hi - lo < 1e-6 else (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        span_x = max(1.0, float(xs.max() - xs.min()))
        pix = [(int(x0 + (x - xs.min()) / span_x * panel_w), int(margin + panel_h - (y - lo) / (hi - lo) * panel_h))
               for x, y in zip(xs, ys)]
        for a, b in zip(pix[:-1], pix[1:]):
            cv2.line(canvas, a, b, colour, 2, cv2.LINE_AA)
        for p in pix:
            cv2.circle(canvas, p, 3, colour, -1, cv2.LINE_AA)
        best = int(np.argmax(ys)) if key == "val_dsc" else int(np.argmin(ys))
        cv2.circle(canvas, pix[best], 7, (0, 0, 0), 1, cv2.LINE_AA)
        for value, y in ((hi, margin + 12), (lo, margin + panel_h - 4)):
            cv2.putText(canvas, f"{value:.3f}", (x0 + 4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (90, 90, 90), 1, cv2.LINE_AA)
        cv2.putText(canvas, f"epoch {int(xs.min())}..{int(xs.max())}", (x0, margin + panel_h + 20),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    ok, encoded = cv2.imencode(".png", canvas)  # imwrite says a full disk only by returning False
    if not ok:
        raise ValueError("OpenCV could not encode the curves as PNG")
    save_atomic(path, lambda tmp: tmp.write_bytes(encoded.tobytes()))
