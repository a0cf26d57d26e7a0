"""Evaluating a folder: one row per ground-truth case, the per-case CSV, and the per-modality summary."""
from __future__ import annotations

import csv
import json
import math
import os
import signal
from dataclasses import dataclass
from functools import partial
from multiprocessing import Pool
from pathlib import Path
from typing import Iterator

import numpy as np

from medsam_lite.core.case import CaseError, check_spacing
from medsam_lite.io.challenge import open_npz

from .metrics import case_metrics

SPACING_ORDERS = ("stored", "zyx")


@dataclass
class CaseRow:
    """One line of the metrics CSV. ``dsc``/``nsd`` are None where there is no number (error, or --no-nsd)."""

    case: str
    dsc: float | None
    nsd: float | None
    note: str = ""
    error: bool = False
    warning: bool = False


def modality(case: str) -> str:
    """The part after ``2DBox_``/``3DBox_`` up to the next ``_`` (e.g. ``CT``, ``XRay``)."""
    stem = case.split("_", 1)[1] if "_" in case else case
    return stem.split("_", 1)[0]


def evaluate_case(case: str, seg_dir: Path, gt_dir: Path, nsd: bool = True, spacing_order: str = "stored") -> CaseRow:
    """Metrics of ``case`` (a file name in ``gt_dir``) against the same name in ``seg_dir``."""
    seg_path = seg_dir / case
    if not seg_path.is_file():
        return CaseRow(case, 0.0, 0.0 if nsd else None, "missing prediction: scored 0", warning=True)
    gt_path = gt_dir / case
    try:
        with _open(gt_path, "ground truth") as gt_file, _open(seg_path, "prediction") as seg_file:
            gts = _array(gt_file, "gts", gt_path, "ground truth")
            segs = _array(seg_file, "segs", seg_path, "prediction")
            spacing = None
            if case.startswith("3D"):
                spacing = (1.0, 1.0, 1.0)  # read by NSD alone
                if nsd:
                    stored = _array(gt_file, "spacing", gt_path, "ground truth", " (a 3D case's NSD needs it)")
                    try:
                        spacing = check_spacing(stored)
                    except CaseError as exc:
                        raise CaseError(f"{_named(gt_path, 'ground truth')}: {exc}") from exc
                if spacing_order == "zyx":
                    spacing = spacing[::-1]
        metrics = case_metrics(gts, segs, spacing, nsd=nsd)
    except CaseError as exc:
        return CaseRow(case, None, None, f"error: {exc}", error=True)
    except Exception as exc:  # one unreadable case must not stop the others
        return CaseRow(case, None, None, f"error: {type(exc).__name__}: {exc}", error=True)
    note = ""
    if metrics.skipped:
        note = f"skipped label(s) {' '.join(map(str, metrics.skipped))}: absent from gts and segs"
    if math.isnan(metrics.dsc):
        note = "no labels in gts"
    return CaseRow(case, metrics.dsc, metrics.nsd, note)


def _named(path: Path, what: str) -> str:
    """How an error names a file: ``the ground truth gts/x.npz`` (``what``: prediction or ground truth)."""
    return f"the {what} {path.parent.name}/{path.name}"


def _open(path: Path, what: str) -> np.lib.npyio.NpzFile:
    """The .npz at ``path``; CaseError naming it (``what``: prediction or ground truth) when it is none."""
    try:
        return open_npz(path)
    except CaseError as exc:
        raise CaseError(f"{_named(path, what)}: {exc}") from exc


def _array(data: np.lib.npyio.NpzFile, key: str, path: Path, what: str, why: str = "") -> np.ndarray:
    """Array ``key`` of an open .npz; CaseError naming the file and the arrays it has when it is missing."""
    if key not in data.files:
        raise CaseError(f"{_named(path, what)} has no {key} array{why}; it has "
                        f"{', '.join(data.files) or 'none'}")
    return data[key]


def npz_names(folder: Path) -> list[str]:
    """The names of the .npz files in ``folder``, sorted."""
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix == ".npz")


def evaluate_folder(seg_dir: Path, gt_dir: Path, nsd: bool = True, workers: int = 1,
                    spacing_order: str = "stored") -> Iterator[CaseRow]:
    """Rows in completion order; ``workers`` > 1 uses a process pool."""
    cases = npz_names(gt_dir)
    run = partial(evaluate_case, seg_dir=seg_dir, gt_dir=gt_dir, nsd=nsd, spacing_order=spacing_order)
    if workers <= 1 or len(cases) <= 1:
        yield from map(run, cases)
        return
    with Pool(min(workers, len(cases)), initializer=_leave_stops_to_parent) as pool:
        yield from pool.imap_unordered(run, cases)


def _leave_stops_to_parent() -> None:
    """A pool worker ignores Ctrl+C (a terminal sends it to the whole process group) and dies quietly on the
    SIGTERM of the pool's ``terminate``: the parent alone reports a stop (each worker printed a traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _format(value: float | None) -> str:
    """As the official CSV: rounded to 4 decimals, Python float text, NaN or no value an empty field."""
    if value is None or math.isnan(value):
        return ""
    return repr(float(np.round(value, 4)))


def write_metrics_csv(path: str | os.PathLike[str], rows: list[CaseRow], nsd: bool = True) -> None:
    """``case,dsc,nsd,note`` sorted by case (``nsd`` left out with --no-nsd)."""
    from medsam_lite.core.atomic import write_with

    def _write(handle) -> None:
        writer = csv.writer(handle)
        writer.writerow(["case", "dsc"] + (["nsd"] if nsd else []) + ["note"])
        for row in sorted(rows, key=lambda r: r.case):
            writer.writerow([row.case, _format(row.dsc)] + ([_format(row.nsd)] if nsd else []) + [row.note])

    write_with(path, _write, mode="w")


def summarise(rows: list[CaseRow]) -> dict:
    """Mean DSC/NSD per modality and the mean over modalities (how the challenge ranks)."""

    def mean(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None and not math.isnan(v)]
        return float(np.mean(kept)) if kept else None

    groups: dict[str, list[CaseRow]] = {}
    for row in rows:
        if not row.error:
            groups.setdefault(modality(row.case), []).append(row)
    per = {
        name: {"cases": len(group), "dsc": mean([r.dsc for r in group]), "nsd": mean([r.nsd for r in group])}
        for name, group in sorted(groups.items())
    }
    return {
        "modalities": per,
        "mean_over_modalities": {
            "dsc": mean([m["dsc"] for m in per.values()]),
            "nsd": mean([m["nsd"] for m in per.values()]),
        },
        "cases": sum(m["cases"] for m in per.values()),
        "errors": sum(r.error for r in rows),
    }


def summary_table(summary: dict) -> str:
    """The summary as a small text table."""
    show = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [f"{'modality':<16}{'cases':>6}{'DSC':>9}{'NSD':>9}"]
    for name, m in summary["modalities"].items():
        lines.append(f"{name:<16}{m['cases']:>6}{show(m['dsc']):>9}{show(m['nsd']):>9}")
    overall = summary["mean_over_modalities"]
    lines.append(f"{'mean (modalities)':<16}{summary['cases']:>5}{show(overall['dsc']):>9}{show(overall['nsd']):>9}")
    return "\n".join(lines)


def write_summary_json(path: str | os.PathLike[str], summary: dict) -> None:
    from medsam_lite.core.atomic import write_with

    write_with(path, lambda handle: json.dump(summary, handle, indent=2), mode="w")
