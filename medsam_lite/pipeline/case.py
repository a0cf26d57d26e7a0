"""One checked case (``core.case.Case``) in memory -> its label map, by the fast schedule (each slice encoded
once) or the official one (a slice encoded again for every box, as the official script; for benchmarks)."""
from __future__ import annotations

from medsam_lite.engines.base import Engine
from medsam_lite.pipeline.segment import segment_2d, segment_3d

def segment_case(engine: Engine, case, schedule: str = "fast"):
    """The label map of a checked Case (labels 1..N in box order), by the fast or the official schedule."""
    if schedule == "official":
        from medsam_lite.pipeline.official import segment_2d_official, segment_3d_official

        run_2d, run_3d = segment_2d_official, segment_3d_official
    else:
        run_2d, run_3d = segment_2d, segment_3d
    if len(case.boxes) == 0 and case.fallback is not None:
        return case.fallback
    if case.is_3d:
        options = {"z_middle": case.z_middle} if case.z_middle is not None else {}
        if case.until_empty:
            if schedule == "official":
                raise ValueError("the official schedule has no until-empty propagation")
            options["until_empty"] = True
        return run_3d(engine, case.image, case.boxes, dtype=case.label_dtype, **options)
    return run_2d(engine, case.image, case.boxes, dtype=case.label_dtype)
