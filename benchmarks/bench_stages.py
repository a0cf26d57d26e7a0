"""Where the time of ``medsam-lite predict`` goes, per shared case and stage, and how close the encoder runs to
the machine's fp32 matmul peak.

Each case runs in a fresh process (``bench_predict.run_once``: the challenge's one case per run) on the
OpenVINO fp32 engine; the stages come from the timing CSV (``medsam_lite.core.timing``): start-up (process start
until the engine is ready), load, pre-processing, encoder, decoder, post-processing/upsampling and write; "other"
is the rest of the process's wall time (interpreter exit, the summary). Then:
- the fp32 matmul peak of this machine as OpenVINO runs it (a 2048 x 2048 x 2048 MatMul, same threads);
- one encoder pass: its FLOPs counted from the IR (2 x multiply-adds of every MatMul and convolution),
  seconds and GFLOP/s, as a share of that peak.
The peak and the pass are timed in turn, 12 rounds, and the best of each is compared: on the 2-core AMD EPYC the
matmul's rate moved between ~135 and ~190 GFLOP/s in phases of a few seconds while the encoder's stayed within
112-124, so a peak timed once before the pass put the same encoder at 61 % of it in one run and 81 % in the next.

With ``--profile``, also where one encoder pass and one box of the decoder spend their time, per op type of
the compiled graph (OpenVINO's per-node counters, the fastest of 5 runs): milliseconds, share, and GFLOP/s of
the matmuls and convolutions, and the encoder pass again per part (stages 0-3, the neck); give two export folders
to compare them side by side in one run.

Usage: python benchmarks/bench_stages.py --export-dir DIR [--shared ../shared] [--only SUBSTRING ...]
       [--repeat N] [--threads N] [--profile [DIR ...]] [--no-cases]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from medsam_lite.engines.openvino_import import import_openvino
from medsam_lite.engines.cpu import cpu_features, cpu_name
from medsam_lite.engines.decoder_bf16 import product_macs


def _bench_predict():
    """benchmarks/bench_predict.py, the sibling script whose fresh-process runner this one shares."""
    spec = importlib.util.spec_from_file_location("bench_predict", Path(__file__).with_name("bench_predict.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_BENCH_PREDICT = _bench_predict()
run_once, mode_args = _BENCH_PREDICT.run_once, _BENCH_PREDICT.mode_args

STAGES = ("startup", "load", "preprocess", "encoder", "decoder", "postprocess", "write")


def _op_gflop(model) -> dict[str, float]:
    """GFLOP of each MatMul / (Group)Convolution of a static-shape model, by its name."""
    flops = {}
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "MatMul":
            flops[op.get_friendly_name()] = 2 * product_macs(op) / 1e9
        elif kind in ("Convolution", "GroupConvolution"):
            weights = list(op.input(1).get_shape())
            flops[op.get_friendly_name()] = 2 * int(np.prod(list(op.output(0).get_shape()))) * int(np.prod(weights[-3:])) / 1e9
    return flops


def model_gflop(model) -> float:
    """2 x multiply-adds of the MatMul, Convolution and GroupConvolution ops of a static-shape OpenVINO model."""
    return sum(_op_gflop(model).values())


def op_profile(core, config: dict, model, inputs: list[np.ndarray]) -> tuple[float, dict[str, tuple[float, float]]]:
    """(best wall ms, {op type: (ms, GFLOP)}) of the compiled ``model``'s fastest of 5 runs (``node_profile``)."""
    wall, nodes = node_profile(core, config, model, inputs)
    table: dict[str, tuple[float, float]] = {}
    for _, kind, ms, gflop in nodes:
        total_ms, total = table.get(kind, (0.0, 0.0))
        table[kind] = (total_ms + ms, total + gflop)
    return wall, table


def node_profile(core, config: dict, model,
                 inputs: list[np.ndarray]) -> tuple[float, list[tuple[str, str, float, float]]]:
    """(best wall ms, [(node name, op type, ms, GFLOP)]) of the compiled ``model``'s fastest of 5 runs. A matmul,
    convolution or fused-subgraph node gets the FLOPs of the source ops it was made of (its
    ``originalLayersNames``, each counted once, else the MatMul of its scope); other nodes and nodes whose
    source ops cannot be told (an unnamed scope) count none, so a type's GFLOP/s is a floor."""
    flops = _op_gflop(model)
    compiled = core.compile_model(model, "CPU", {**config, "PERF_COUNT": True})
    node_flops: dict[str, float] = {}
    counted: set[str] = set()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = str(info["layerType"].astype(str)) if "layerType" in info else ""
        if kind not in ("FullyConnected", "MatMul", "Convolution", "GroupConvolution", "Subgraph"):
            continue
        sources = set(str(info["originalLayersNames"].astype(str)).split(",")) if "originalLayersNames" in info else set()
        sources = {source for source in sources if source in flops} - counted
        counted |= sources
        name = op.get_friendly_name()
        node_flops[name] = sum(flops[source] for source in sources)
        scope = name.rsplit("/", 1)[0]
        if not node_flops[name] and scope:  # a linear layer fused into one node named after its bias Add
            node_flops[name] = flops.get(scope + "/MatMul", 0.0)
    request = compiled.create_infer_request()
    request.infer(inputs)
    best = None
    for _ in range(5):
        start = time.perf_counter()
        request.infer(inputs)
        wall = time.perf_counter() - start
        if best is None or wall < best[0]:
            best = (wall, [(p.node_name, p.node_type, p.real_time.total_seconds()) for p in request.profiling_info])
    nodes = [(name, kind, seconds * 1000, node_flops.get(name, 0.0)) for name, kind, seconds in best[1] if seconds > 0]
    return best[0] * 1000, nodes


def _cell(ms: float, total_ms: float, gflop: float) -> str:
    """One table cell: milliseconds, share of the pass, GFLOP/s where FLOPs were counted."""
    return f"{ms:9.2f} ms {100 * ms / total_ms:5.1f} %" + (f" {gflop / ms * 1000:6.0f}" if gflop and ms else " " * 7)


def encoder_part(node_name: str) -> str:
    """The part of the image encoder a compiled node's name places it in: a stage (TinyViT's layers.1-3), the neck,
    stage 0 (the patch embedding and layers.0, or in the exported form ops traced at the encoder's own level: the
    strips of ``modeling.row_strips``), or "unnamed" (nodes OpenVINO made and named itself)."""
    parts = node_name.split("/")
    for i, label in ((1, "stage 1 (128 x 128, windows of 7)"), (2, "stage 2 (64 x 64, windows of 14)"),
                     (3, "stage 3 (64 x 64, windows of 7)")):
        if f"layers.{i}" in parts:
            return label
    if "neck" in parts:
        return "neck"
    if "patch_embed" in parts or "layers.0" in parts or parts[:2] == ["", "image_encoder"]:
        return "stage 0 (256 x 256, MBConv, merge)"
    return "unnamed"


def print_encoder_parts(core, config: dict, export_dirs: list[Path]) -> None:
    """One encoder pass per part of the encoder (``encoder_part``), export folders side by side: ms, share,
    GFLOP/s of the matmuls and convolutions counted there."""
    from medsam_lite.engines.manifest import MODEL_FILES

    x = np.random.default_rng(3).random((1, 3, 256, 256), dtype=np.float32)
    results = []
    for export_dir in export_dirs:
        _, nodes = node_profile(core, config, core.read_model(export_dir / MODEL_FILES["encoder"]), [x])
        parts: dict[str, tuple[float, float]] = {}
        for name, _, ms, gflop in nodes:
            total_ms, total = parts.get(encoder_part(name), (0.0, 0.0))
            parts[encoder_part(name)] = (total_ms + ms, total + gflop)
        results.append(parts)
    print("\nencoder pass by part: ms, share, GFLOP/s")
    print(f"{'part':<36}" + "".join(f"{d.name[-22:]:>34}" for d in export_dirs))
    order = lambda p: (p in ("neck", "unnamed"), p == "unnamed", p)  # noqa: E731  stages 0-3, neck, unnamed
    totals = [sum(ms for ms, _ in parts.values()) for parts in results]
    for part in sorted({p for parts in results for p in parts}, key=order):
        cells = []
        for parts, total in zip(results, totals):
            ms, gflop = parts.get(part, (0.0, 0.0))
            cells.append(_cell(ms, total, gflop))
        print(f"{part:<36}" + "".join(f"{c:>34}" for c in cells))


def print_profiles(core, config: dict, export_dirs: list[Path]) -> None:
    """Per op type, side by side for each export folder: the encoder pass and one box of the decoder."""
    from medsam_lite.engines.manifest import BOX_INPUT_SHAPE, DECODER_IMAGE_OUTPUTS, MODEL_FILES

    rng = np.random.default_rng(3)
    embedding = rng.standard_normal((1, 256, 64, 64)).astype(np.float32)
    for part in ("encoder", "decoder"):
        results = []
        for export_dir in export_dirs:
            model = core.read_model(export_dir / MODEL_FILES[part])
            if part == "encoder":
                inputs = [rng.random((1, 3, 256, 256), dtype=np.float32)]
            else:
                # One box, as BoxDecoder decodes. Format 8 exports take exactly one; older ones (a dynamic box axis)
                # are reshaped to it, so their table shows the static form, not the one predict ran (~10 % slower).
                model.reshape({model.inputs[-1].get_any_name(): list(BOX_INPUT_SHAPE)})
                prepared = core.compile_model(export_dir / MODEL_FILES["decoder_image"], "CPU", config)([embedding])
                inputs = [np.array(prepared[i]) for i in range(len(DECODER_IMAGE_OUTPUTS))]
                inputs.append(np.array([[40.0, 52.0, 180.0, 200.0]], np.float32))
            results.append(op_profile(core, config, model, inputs))
        totals = [sum(ms for ms, _ in table.values()) for _, table in results]
        kinds = sorted({k for _, table in results for k in table}, key=lambda k: -max(t.get(k, (0, 0))[0] for _, t in results))
        print(f"\n{part} ({'encoder pass' if part == 'encoder' else 'one box'}): ms per op type, share, GFLOP/s")
        print(f"{'op type':<18}" + "".join(f"{d.name[-22:]:>34}" for d in export_dirs))
        for kind in kinds:
            cells = []
            for (_, table), total in zip(results, totals):
                ms, g = table.get(kind, (0.0, 0.0))
                cells.append(_cell(ms, total, g))
            print(f"{kind:<18}" + "".join(f"{c:>34}" for c in cells))
        print(f"{'wall (best of 5)':<18}" + "".join(f"{wall:>31.2f} ms" for wall, _ in results))


IN_TURN_ROUNDS = 12  # the matmul peak and the encoder pass, timed one after the other this many times


def best_in_turn(fns: list, rounds: int = IN_TURN_ROUNDS) -> list[float]:
    """Best seconds of each of ``fns``, run one after the other ``rounds`` times (after one warm-up each), so
    that all of them see the machine's fast and slow phases alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [min(spent) for spent in times]


def matmul(core, config: dict, n: int = 2048):
    """(run, GFLOP): an n x n x n fp32 MatMul (constant right side: OpenVINO's FullyConnected, as the linears)
    compiled with ``config``, and its arithmetic."""
    import openvino.opset13 as ops

    ov = import_openvino()

    a = ops.parameter([n, n], np.float32, name="a")
    b = ops.constant(np.random.default_rng(0).random((n, n), dtype=np.float32))
    compiled = core.compile_model(ov.Model([ops.matmul(a, b, False, False)], [a]), "CPU", config)
    request = compiled.create_infer_request()
    x = np.random.default_rng(1).random((n, n), dtype=np.float32)
    return (lambda: request.infer([x])), 2 * n**3 / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--checkpoint", default="lite_medsam.pth",
                        help="a file in ../shared/checkpoints [default: the official weights]")
    parser.add_argument("--export-dir", type=Path, required=True)
    parser.add_argument("--only", nargs="*", default=[""], help="only cases whose name contains one of these")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the fastest is shown")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--profile", type=Path, nargs="*", default=None,
                        help="per-op profile of --export-dir and of these export folders, side by side")
    parser.add_argument("--no-cases", action="store_true", help="skip the per-case runs")
    args = parser.parse_args()
    cases = sorted(p for p in (args.shared / "cases" / "imgs").glob("*.npz") if any(o in p.name for o in args.only))
    checkpoint = args.shared / "checkpoints" / args.checkpoint
    run_args = mode_args("openvino", args.export_dir, Path(tempfile.gettempdir()))
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs ({cpu_features()}); OpenVINO fp32, fresh process per case, best of {args.repeat}")

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp, "2DBox_empty_startup.npz")
        np.savez(empty, imgs=np.zeros((64, 64, 3), np.uint8), boxes=np.zeros((0, 4), np.int64))
        cases = [] if args.no_cases else [empty, *cases]
        header = f"{'case':<54}{'wall':>7}" + "".join(f"{s:>12}" for s in STAGES) + f"{'other':>8}"
        print(header)
        print("-" * len(header), flush=True)
        for case in cases:
            result = min((run_once(case, checkpoint, run_args, args.threads) for _ in range(args.repeat)),
                         key=lambda r: r["seconds"])
            stages = result["stages"]
            other = result["seconds"] - sum(stages.get(s, 0.0) for s in STAGES)
            print(f"{case.name:<54}{result['seconds']:>7.2f}" + "".join(f"{stages.get(s, 0.0):>12.3f}" for s in STAGES)
                  + f"{other:>8.3f}", flush=True)

    from medsam_lite.engines.manifest import MODEL_FILES
    from medsam_lite.engines.openvino_engine import compile_config

    core = import_openvino().Core()
    config = compile_config("f32", args.threads)
    run_matmul, matmul_gflop = matmul(core, config)
    model = core.read_model(args.export_dir / MODEL_FILES["encoder"])
    gflop = model_gflop(model)
    request = core.compile_model(model, "CPU", config).create_infer_request()
    x = np.random.default_rng(2).random((1, 3, 256, 256), dtype=np.float32)
    matmul_seconds, seconds = best_in_turn([run_matmul, lambda: request.infer([x])])
    peak = matmul_gflop / matmul_seconds
    print(f"fp32 matmul peak (OpenVINO, 2048^3, best of {IN_TURN_ROUNDS} in turn with the encoder pass): "
          f"{peak:.0f} GFLOP/s")
    print(f"encoder pass: {gflop:.1f} GFLOP in {seconds * 1000:.0f} ms (best of {IN_TURN_ROUNDS}) = "
          f"{gflop / seconds:.0f} GFLOP/s, "
          f"{100 * gflop / seconds / peak:.0f} % of the matmul peak")
    if args.profile is not None:
        print_profiles(core, config, [args.export_dir, *args.profile])
        print_encoder_parts(core, config, [args.export_dir, *args.profile])
    return 0


if __name__ == "__main__":
    sys.exit(main())
