"""Running an evaluation as a command: progress, warnings, CSV, summary table; shared by both CLIs."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from medsam_lite.core.atomic import unwritable, why_not_written

from .runner import evaluate_folder, npz_names, summarise, summary_table, write_metrics_csv, write_summary_json


def run_evaluation(seg_dir: Path, gt_dir: Path, csv_path: Path, nsd: bool = True, workers: int = 1,
                   spacing_order: str = "stored", summary_json: Path | None = None, quiet: bool = False) -> int:
    """Evaluate, write the CSV (and JSON summary), print the summary; exit status 1 if any case errored."""
    from tqdm import tqdm

    for folder, what in [(seg_dir, "segmentation"), (gt_dir, "ground-truth")]:
        if not Path(folder).is_dir():
            print(f"error: the {what} folder {folder} does not exist", file=sys.stderr)
            return 2
    for path, what in [(csv_path, "metrics CSV"), (summary_json, "summary JSON")]:
        if path is not None and (why := unwritable(Path(path).parent)):  # said before the scoring, not after it
            print(f"error: cannot write the {what} {path}: {why}", file=sys.stderr)
            return 2
    start = time.perf_counter()
    rows = []
    stream = evaluate_folder(Path(seg_dir), Path(gt_dir), nsd=nsd, workers=workers, spacing_order=spacing_order)
    for row in tqdm(stream, desc="cases", unit="case", file=sys.stderr, disable=quiet or None):
        rows.append(row)
        if row.error:
            tqdm.write(f"ERROR {row.case}: {row.note.removeprefix('error: ')}", file=sys.stderr)  # the CSV keeps it
        elif row.warning or row.note:
            tqdm.write(f"WARNING {row.case}: {row.note}", file=sys.stderr)
    if not rows:
        print(f"error: no .npz ground-truth cases in {gt_dir}", file=sys.stderr)
        return 2
    unscored = sorted(set(npz_names(Path(seg_dir))) - {row.case for row in rows})
    if unscored:  # a misnamed prediction would otherwise vanish from the scores without a word
        shown = ", ".join(unscored[:5]) + (f" and {len(unscored) - 5} more" if len(unscored) > 5 else "")
        print(f"WARNING {len(unscored)} prediction(s) in {seg_dir} have no ground truth in {gt_dir} and are not "
              f"scored: {shown}", file=sys.stderr)
    summary = summarise(rows)
    summary["seconds"] = round(time.perf_counter() - start, 3)
    print(summary_table(summary))  # first: a file that cannot be written below does not take the scores with it
    for path, what, write in [(csv_path, "metrics CSV", lambda: write_metrics_csv(csv_path, rows, nsd=nsd)),
                              (summary_json, "summary JSON", lambda: write_summary_json(summary_json, summary))]:
        if path is not None:
            try:
                write()
            except OSError as exc:
                print(f"error: cannot write the {what} {path}: {why_not_written(exc)} (nothing half-written was "
                      f"left; the table above has the per-modality scores)", file=sys.stderr)
                return 2
    print(f"{len(rows)} case(s), {summary['errors']} error(s), {summary['seconds']:.1f} s -> {csv_path}", file=sys.stderr)
    return 1 if summary["errors"] else 0
