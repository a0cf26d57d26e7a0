"""Precision modes judged by accuracy: each mode runs the official weights on every labelled real case (as
`predict` does) and is compared with fp32, case by case: encoder ms per pass, whole-case seconds, voxel agreement
with fp32 (foreground voxels labelled alike / foreground of either), DSC/NSD and their change from fp32, per
modality, and the bar of `--precision fast` (encoder >= 2x fp32; mean DSC and mean NSD within 0.005 of fp32; no
case more than 0.03 below fp32 in DSC).

Cases: ``../shared/cases`` and ``../shared/cases_mm`` (those with ground truth) and a fixed sample of
``../shared/finetune/hippocampus`` (``--hippocampus N``, evenly spaced in name order). Modes: ``f32``, ``bf16``
(the encoder under OpenVINO's bf16 inference precision hint, the decoder f32), ``int8`` (the export's int8
encoder, its linears in int8 and the rest under the bf16 hint: ``medsam-lite export --int8 DIR``), ``mixed`` (the
encoder's stage 0 f32 but its MBConv projections, the rest under the bf16 hint: ``engines.encoder_split``; the box
decoder's largest products bf16: ``engines.decoder_bf16``), ``bf16-linears`` (the encoder's linears in bf16, the rest
f32: ``engines.linears_bf16``), and ``noiseLEVEL`` (not a mode: ``noise0.04`` is f32 with seeded random noise of 4 %
of each embedding's norm, how sensitive each case is to an error of that size).

    python benchmarks/bench_precision.py --export-dir EXPORT [--modes f32 bf16 int8 mixed bf16-linears] [--hippocampus 10]
    python benchmarks/bench_precision.py --export-dir EXPORT --mixed   # fp32 up to a stage, bf16 after it

``--mixed`` splits the encoder at each stage boundary into two compiled parts (fp32, then bf16), chained as the
engine's ``mixed`` chains them, and prints the embedding's relative error against fp32 on five ``cases_mm`` images
and the ms per pass (that error does not rank the splits as the cases do: docs/precision.md).
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from evaluation.runner import evaluate_case, modality
from medsam_lite.batch.runner import run_folder
from medsam_lite.engines import create_engine
from medsam_lite.engines.encoder_split import ChainedRequest, split_encoder
from medsam_lite.engines.precision import MIN_SPEEDUP, MODES, fast_rule, meets_bar

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def encoder_ms(engines: dict, rounds: int = 20) -> dict[str, float]:
    """Median ms of one encoder pass per mode on a real input (a shared 2D case), the modes' passes interleaved
    (one of each per round, after one warm-up each): on the 2-core AMD EPYC Zen 5 a pass varies by 10-20 % from
    minute to minute, and modes timed one after the other took that spread for a difference between them (bf16
    x1.66 in one run, x2.29 in another)."""
    from medsam_lite.core.preprocess import image_to_model_input

    image = np.load(sorted((SHARED / "cases_mm" / "imgs").glob("*.npz"))[0])["imgs"]
    model_in = image_to_model_input(image)[0]
    times: dict[str, list[float]] = {mode: [] for mode in engines}
    for engine in engines.values():
        engine.encode(model_in)
    for _ in range(rounds):
        for mode, engine in engines.items():
            start = time.perf_counter()
            engine.encode(model_in)
            times[mode].append(time.perf_counter() - start)
    return {mode: 1000 * float(np.median(t)) for mode, t in times.items()}


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Foreground voxels with the same label in both / foreground voxels of either (1.0 when both are empty)."""
    either = (a > 0) | (b > 0)
    total = int(either.sum())
    return 1.0 if total == 0 else float(((a == b) & either).sum() / total)


class NoisyEmbeddings:
    """The f32 engine with Gaussian noise added to every embedding, ``level`` times the embedding's norm, seeded by
    the encoder's input (mode ``noiseLEVEL``, e.g. ``noise0.04``): how far each case's masks move under an
    encoder error of a given size that has no structure, beside a mode's error of the same size that has one."""

    def __init__(self, engine, level: float) -> None:
        self.engine, self.level = engine, level

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    def _noisy(self, image: np.ndarray, embedding: np.ndarray) -> np.ndarray:
        noise = np.random.default_rng(zlib.crc32(image.tobytes())).standard_normal(embedding.shape, np.float32)
        return embedding + noise * (self.level * np.linalg.norm(embedding) / np.linalg.norm(noise))

    def encode(self, image: np.ndarray) -> np.ndarray:
        return self._noisy(image, self.engine.encode(image))

    def encode_pair(self, first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return tuple(self._noisy(i, e) for i, e in zip((first, second), self.engine.encode_pair(first, second)))


def run_mode(mode: str, export: Path, folders: list[tuple[str, Path, list[Path]]], out: Path) -> dict:
    noise = float(mode.removeprefix("noise")) if mode.startswith("noise") else None
    choice = create_engine("openvino", None, export, "f32" if noise is not None else mode)
    choice.engine.ready()
    engine = choice.engine if noise is None else NoisyEmbeddings(choice.engine, noise)
    result = {"engine": engine, "cases": {}}
    for name, folder, cases in folders:
        segs = out / mode / name
        segs.mkdir(parents=True)
        for case in run_folder(engine, cases, segs, overwrite=True):
            row = evaluate_case(case.case, segs, folder / "gts")
            result["cases"][(name, case.case)] = (row.dsc, row.nsd, case.seconds, segs / case.case)
            print(f"{mode} {name}/{case.case}: DSC {row.dsc:.4f} NSD {row.nsd:.4f} ({case.seconds:.1f} s)",
                  file=sys.stderr, flush=True)
    return result


def mixed_table(export: Path) -> None:
    import openvino as ov

    from medsam_lite.core.preprocess import image_to_model_input

    core = ov.Core()
    xml = export / "image_encoder.xml"
    config = lambda precision: {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": 2}  # noqa: E731
    images = sorted((SHARED / "cases_mm" / "imgs").glob("*.npz"))[:5]
    inputs = [image_to_model_input(np.load(p)["imgs"])[0] for p in images]
    exact = core.compile_model(core.read_model(xml), "CPU", config("f32"))
    references = [exact(x)[0] for x in inputs]

    def split(stage: str):
        head, tail = split_encoder(core.read_model(xml), stage)
        chained = ChainedRequest(core.compile_model(head, "CPU", config("f32")).create_infer_request(),
                                 core.compile_model(tail, "CPU", config("bf16")).create_infer_request())
        return lambda x: chained.infer([x])[0].copy()

    print("| fp32 up to | relative error | ms/pass |\n|---|---:|---:|")
    whole = core.compile_model(core.read_model(xml), "CPU", config("bf16"))
    for stage, run in [("(none: all bf16)", lambda x: whole(x)[0])] + [
            (s, split(s)) for s in ("layers.1", "layers.2", "layers.3", "neck")]:
        errors = [np.linalg.norm(run(x) - r) / np.linalg.norm(r) for x, r in zip(inputs, references)]
        run(inputs[0])
        start = time.perf_counter()
        for _ in range(5):
            run(inputs[0])
        print(f"| {stage} | {np.mean(errors):.3f} | {(time.perf_counter() - start) / 5 * 1000:.0f} |")


def fmt(value: float | None, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export-dir", type=Path, required=True, help="OpenVINO export of the official weights")
    parser.add_argument("--modes", nargs="+", default=list(MODES),
                        help=f"{', '.join(MODES)}, and noiseLEVEL (e.g. noise0.04: f32 with random embedding noise)")
    parser.add_argument("--hippocampus", type=int, default=10, help="hippocampus volumes, evenly spaced")
    parser.add_argument("--mixed", action="store_true", help="only the fp32-then-bf16 split table")
    args = parser.parse_args()
    if args.mixed:
        mixed_table(args.export_dir)
        return
    accuracy = _sibling("bench_accuracy")
    stages = _sibling("bench_stages")
    folders = [("cases", SHARED / "cases", accuracy.labelled_cases(SHARED / "cases", None)),
               ("cases_mm", SHARED / "cases_mm", accuracy.labelled_cases(SHARED / "cases_mm", None)),
               ("hippocampus", SHARED / "finetune" / "hippocampus",
                accuracy.labelled_cases(SHARED / "finetune" / "hippocampus", args.hippocampus))]
    modes = ["f32"] + [m for m in args.modes if m != "f32"]
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as scratch:
        runs = {mode: run_mode(mode, args.export_dir, folders, Path(scratch)) for mode in modes}
        for mode, ms in encoder_ms({mode: run["engine"] for mode, run in runs.items()}).items():
            runs[mode]["encoder_ms"] = ms
        base = runs["f32"]
        print(f"# {stages.cpu_name()} ({stages.cpu_features()}); official weights; {len(base['cases'])} labelled cases")
        head = "| case | modality | f32 DSC | f32 NSD | " + " | ".join(
            f"{m} dDSC | {m} dNSD | {m} agree" for m in modes[1:]) + " |"
        print(head + "\n|" + "---|" * (head.count("|") - 1))
        for key, (dsc, nsd, _, path) in base["cases"].items():
            cells = [key[1].removesuffix(".npz"), modality(key[1]), fmt(dsc), fmt(nsd)]
            reference = np.load(path)["segs"]
            for mode in modes[1:]:
                m_dsc, m_nsd, _, m_path = runs[mode]["cases"][key]
                agree = agreement(np.load(m_path)["segs"], reference)
                cells += [fmt(m_dsc - dsc, True), fmt(m_nsd - nsd, True), f"{agree:.4f}"]
            print("| " + " | ".join(cells) + " |")
        print("\n| mode | encoder ms/pass | x f32 | case s (sum) | mean DSC | dDSC | mean NSD | dNSD | worst dDSC "
              "| cases < -0.01 | bar |\n|---|---|---|---|---|---|---|---|---|---|---|")
        qualified: list[tuple[float, str]] = []
        f32_dsc = np.mean([v[0] for v in base["cases"].values()])
        f32_nsd = np.mean([v[1] for v in base["cases"].values()])
        for mode in modes:
            run = runs[mode]
            deltas = [run["cases"][k][0] - base["cases"][k][0] for k in base["cases"]]
            dsc = np.mean([v[0] for v in run["cases"].values()])
            nsd = np.mean([v[1] for v in run["cases"].values()])
            speed = base["encoder_ms"] / run["encoder_ms"]
            meets = meets_bar(speed, dsc - f32_dsc, nsd - f32_nsd, min(deltas))
            if meets and mode != "f32" and mode in MODES:
                qualified.append((speed, mode))
            bar = "meets" if meets else "fails"
            if mode not in MODES:  # noise: its accuracy alone is judged (it runs f32)
                bar = "accuracy " + ("meets" if meets_bar(MIN_SPEEDUP, dsc - f32_dsc, nsd - f32_nsd, min(deltas))
                                     else "fails")
            print(f"| {mode} | {run['encoder_ms']:.0f} | {speed:.2f} | {sum(v[2] for v in run['cases'].values()):.0f} "
                  f"| {dsc:.4f} | {dsc - f32_dsc:+.4f} | {nsd:.4f} | {nsd - f32_nsd:+.4f} | {min(deltas):+.4f} "
                  f"| {sum(d < -0.01 for d in deltas)} | {'-' if mode == 'f32' else bar} |")
        rule, verdict = fast_rule(), max(qualified)[1] if qualified else "f32"
        print(f"\n`--precision fast` on this CPU ({rule.kind}) runs {rule.mode}; this run's verdict: {verdict}"
              + ("" if verdict == rule.mode else " -> not the rule's: change FAST_RULES (medsam_lite/engines/"
                 "precision.py) when repeated runs agree, as one run's ratio near 2x moves by 0.1 or more between runs "
                 "(README, 'Precision modes')"))
        print("\n| modality | cases | f32 DSC | " + " | ".join(f"{m} dDSC" for m in modes[1:]) + " |\n|"
              + "---|" * (3 + len(modes) - 1))
        for name in sorted({modality(k[1]) for k in base["cases"]}):
            keys = [k for k in base["cases"] if modality(k[1]) == name]
            f32_mean = np.mean([base["cases"][k][0] for k in keys])
            cells = [name, str(len(keys)), f"{f32_mean:.4f}"] + [
                f"{np.mean([runs[m]['cases'][k][0] for k in keys]) - f32_mean:+.4f}" for m in modes[1:]]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
