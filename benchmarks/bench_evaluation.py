"""Our DSC/NSD against DeepMind's ``surface-distance`` package on the shared metric pairs, per case.

Both compute the official semantics (labels 1..max(gts), NSD at 2 mm only when mean DSC > 0.2); the
package is driven the way the official compute_metrics.py drives it (whole arrays, label by label).
Prints seconds per case for each, the ratio, whether the numbers agree, and the total over all pairs
in one process (the official script took 15.8 s for them here).

Needs ``pip install surface-distance`` (benchmark only; on NumPy 2 it needs two aliases set below).
Usage: python benchmarks/bench_evaluation.py [--shared ../shared] [--repeat 1]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.ndimage

from evaluation.metrics import NSD_MIN_DSC, NSD_TOLERANCE_MM, case_metrics


def load_surface_distance():
    """Import surface-distance, giving it the NumPy/SciPy names it was written against."""
    for old, new in (("Inf", np.inf), ("NaN", np.nan)):
        if not hasattr(np, old):
            setattr(np, old, new)  # removed in NumPy 2
    for name in ("filters", "morphology"):
        if not hasattr(scipy.ndimage, name):
            setattr(scipy.ndimage, name, scipy.ndimage)
    import surface_distance

    return surface_distance


def package_metrics(sd, gts: np.ndarray, segs: np.ndarray, spacing) -> tuple[float, float]:
    """The official loop over labels with the package's functions."""
    if spacing is None:
        gts, segs, spacing = gts[..., None], segs[..., None], (1.0, 1.0, 1.0)
    dice = []
    for i in range(1, int(gts.max()) + 1):
        dice.append(sd.compute_dice_coefficient(gts == i, segs == i))
    dsc = float(np.mean(dice))
    if not dsc > NSD_MIN_DSC:
        return dsc, 0.0
    nsd = []
    for i in range(1, int(gts.max()) + 1):
        distances = sd.compute_surface_distances(gts == i, segs == i, spacing_mm=spacing)
        nsd.append(sd.compute_surface_dice_at_tolerance(distances, NSD_TOLERANCE_MM))
    return dsc, float(np.mean(nsd))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--repeat", type=int, default=1, help="best of N timings per case")
    args = parser.parse_args()
    sd = load_surface_distance()
    folder = args.shared / "metrics"
    header = f"{'case':<64}{'ours s':>9}{'package s':>11}{'ratio':>8}{'agree':>7}"
    print(header)
    print("-" * len(header), flush=True)
    totals = {"ours": 0.0, "package": 0.0}
    slower_3d = []
    for gt_path in sorted((folder / "gts").glob("*.npz")):
        with np.load(gt_path) as g, np.load(folder / "segs" / gt_path.name) as s:
            gts, segs = g["gts"], s["segs"]
            spacing = tuple(float(x) for x in g["spacing"]) if gt_path.name.startswith("3D") else None
        times = {}
        for name in ("ours", "package"):
            best = float("inf")
            for _ in range(args.repeat):
                start = time.perf_counter()
                if name == "ours":
                    m = case_metrics(gts, segs, spacing)
                    result = (m.dsc, m.nsd)
                else:
                    with np.errstate(all="ignore"):
                        reference = package_metrics(sd, gts, segs, spacing)
                best = min(best, time.perf_counter() - start)
            times[name] = best
            totals[name] += best
        nan_case = np.isnan(reference[0])
        agree = (nan_case or abs(result[0] - reference[0]) < 1e-4) and abs(result[1] - reference[1]) < 1e-4
        ratio = times["package"] / times["ours"]
        if gt_path.name.startswith("3D") and ratio <= 1:
            slower_3d.append(gt_path.name)
        print(f"{gt_path.name:<64}{times['ours']:>9.3f}{times['package']:>11.3f}{ratio:>8.1f}"
              f"{('yes' if agree else 'NO') + ('*' if nan_case else ''):>7}", flush=True)
    print(f"total (one process): ours {totals['ours']:.2f} s, surface-distance {totals['package']:.2f} s, "
          f"official compute_metrics.py 15.8 s (measured once here)")
    print("* the package's (and the official) DSC is NaN there; ours skips the empty label")
    print("ours faster on every 3D case:", "yes" if not slower_3d else f"NO: {', '.join(slower_3d)}")
    return 1 if slower_3d else 0


if __name__ == "__main__":
    sys.exit(main())
