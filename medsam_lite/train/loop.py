"""``finetune(config)``: the whole run, from data folders to ``best.pth``.

Order of work: check the run folder; find and split the cases (by case); read them (a case that cannot be read
is named and left out, the rest run); encode every slice once into the embedding cache (frozen encoder); score
the starting weights on the validation cases (epoch 0); then epochs of seeded samples with jittered boxes,
each followed by a validation DSC, ``metrics.csv``, ``curves.png``, ``last.pt`` and, when it improved,
``best.pth``; early stopping on validation DSC; at the end NSD of the best weights and ``summary.txt``.

Everything random follows from ``seed``, the epoch and the step (the sample order, each box's jitter), not
from a generator's running state: a resumed run repeats an uninterrupted one, and ``torchrun`` processes, each
taking its share of every batch, compute what one process computes.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from medsam_lite.core.case import CaseError
from medsam_lite.train.config import CACHED_MODES, FinetuneConfig
from medsam_lite.train.data import TrainingCase, draw_split, find_cases, read_case, read_split, shared_cases
from medsam_lite.train.distributed import start_distributed
from medsam_lite.train.epoch import train_epoch
from medsam_lite.train.report import finish
from medsam_lite.train.run_dir import prepare_run_dir, save_atomic
from medsam_lite.train.samples import case_samples
from medsam_lite.train.state import RunState, load_last, save_best, save_epoch
from medsam_lite.train.step import TrainStep
from medsam_lite.train.trainable import make_optimizer, make_schedule, select_trainable, set_train_mode
from medsam_lite.train.validate import ModelEngine, score_case


@dataclass
class FinetuneResult:
    """What a run reached (also in ``summary.json``)."""

    run_dir: str
    best_checkpoint: str
    train_cases: int
    val_cases: int
    samples: int
    skipped_small: int
    epochs_run: int
    best_epoch: int
    val_dsc_before: float
    val_dsc_after: float
    val_nsd_before: float | None
    val_nsd_after: float | None
    seconds: float
    finished: bool  # False when stopped by ``stop_after`` (resume it)


def _stderr(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def finetune(config: FinetuneConfig, resume: bool = False, overwrite: bool = False, stop_after: int | None = None,
             allow_fetch: bool = True, say: Callable[[str], None] = _stderr) -> FinetuneResult:
    """Run (or, with ``resume``, continue) the fine-tuning that ``config`` describes; see the module docstring.

    ``stop_after``: stop after this many epochs of this call (a time-boxed session; ``resume`` later);
    ``allow_fetch``: fetch the official weights when none are here (no ``checkpoint``)."""
    started = time.perf_counter()
    config.check()
    dist = start_distributed(config.device)
    if config.batch_size % dist.world:
        raise ValueError(f"--batch-size {config.batch_size} must be a multiple of the {dist.world} processes")
    run_dir = Path(config.run_dir)
    if dist.is_main:
        prepare_run_dir(run_dir, resume, overwrite)
    dist.barrier()
    log = say if dist.is_main else (lambda _m: None)
    if config.threads:
        torch.set_num_threads(config.threads)

    sources = {s.name: s for s in find_cases(config.data)}
    split = _split(config, run_dir, resume, list(sources))
    if shared_cases(split):
        log(f"warning: {len(shared_cases(split))} case(s) both trained on and validated with "
            f"({', '.join(shared_cases(split)[:3])}): the validation DSC measures fitting, not generalisation")
    if dist.is_main and not resume:
        config.save(run_dir / "config.json")
    if dist.is_main and not (run_dir / "split.json").is_file():
        save_atomic(run_dir / "split.json", lambda tmp: tmp.write_text(json.dumps(split, indent=1) + "\n"))
    from medsam_lite.engines.checkpoint import load_model
    from medsam_lite.engines.weights import checkpoint_or_fetch, checkpoint_sha256

    checkpoint = checkpoint_or_fetch(config.checkpoint, allow_fetch=allow_fetch, say=log)
    model, notes = load_model(checkpoint)
    for note in notes:
        log(f"note: {checkpoint}: {note}")
    trained = select_trainable(model, config.train, config.lora_rank)
    model.to(dist.device)
    cached = config.train in CACHED_MODES
    filler = None
    if cached:
        from medsam_lite.train.cache_build import CacheFiller

        filler = CacheFiller(config, checkpoint, checkpoint_sha256(checkpoint), dist, log,
                             len(split["train"]) + len(split["val"]))
    try:
        train_cases = _read_all([sources[n] for n in split["train"]], config, log, filler)
        val_cases = _read_all([sources[n] for n in split["val"]], config, log, filler)
    finally:  # however the filling ends (a stop, a full disk): its bar is not redrawn under the last line
        if filler is not None:
            filler.bar.close()
    embeddings = filler.finish() if filler is not None else None
    if not train_cases or not val_cases:
        raise ValueError(f"no readable {'training' if not train_cases else 'validation'} case left (see the lines above)")
    samples, skipped = [], 0
    for i, case in enumerate(train_cases):
        found, small = case_samples(case, i, config.min_pixels, config.flips)
        samples += found
        skipped += small
    if not samples:
        raise ValueError(f"no training samples: every label is smaller than --min-pixels {config.min_pixels} at 256")
    log(f"{len(train_cases)} training cases ({len(samples)} samples; {skipped} (slice, label) pairs under "
        f"{config.min_pixels} pixels at 256 skipped), {len(val_cases)} validation cases; training "
        f"{config.train}: {sum(p.numel() for p in model.parameters() if p.requires_grad):,} weights "
        f"({len(trained)} tensors) on {dist.describe()}")

    per_epoch = min(config.samples_per_epoch or len(samples), len(samples))
    steps_per_epoch = max(1, per_epoch // config.batch_size)
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    schedule = make_schedule(optimizer, steps_per_epoch * config.epochs, config.warmup)
    step_module = dist.wrap(TrainStep(model, live_encoder=not cached))
    amp = _amp(config, dist.device)
    # converting the decoder (6 s) pays from about 100 validation slices on (saves 2 x 29 ms per slice)
    engine = ModelEngine(model, dist.device, convert=sum(c.slices for c in val_cases) >= 100)

    def validate(nsd: bool = False) -> tuple[float, float | None, list]:
        model.eval()
        if dist.is_main:
            engine.refresh()
        scores = [score_case(engine, case, _embedding_source(embeddings, case), nsd) for case in val_cases] if dist.is_main else []
        return _mean([s.dsc for s in scores]), (_mean([s.nsd for s in scores]) if nsd else None), scores

    state = RunState()
    if resume and (run_dir / "last.pt").is_file():
        state = load_last(run_dir, model, optimizer, schedule, dist.device)
        log(f"resumed {run_dir} after epoch {state.epoch} (best validation DSC {state.best:.4f} at epoch {state.best_epoch})")
    else:
        if resume:
            log(f"resumed {run_dir}, stopped before its starting weights were scored: starting there")
        dsc, nsd, scores = validate(nsd=True)
        state.rows.append({"epoch": 0, "val_dsc": dsc, "seconds": time.perf_counter() - started})
        state.best, state.dsc_before, state.nsd_before, state.before = dsc, dsc, nsd, {s.name: asdict(s) for s in scores}
        if dist.is_main:
            save_best(run_dir, model)
            save_epoch(run_dir, state, model, optimizer, schedule, split)
        log(f"epoch 0 (the starting weights): validation DSC {dsc:.4f}, NSD {nsd:.4f}")

    epochs_this_call, finished = 0, True
    while state.epoch < config.epochs and not state.stopped_early:
        if stop_after is not None and epochs_this_call >= stop_after:
            finished = False
            break
        epoch = state.epoch + 1
        t0 = time.perf_counter()
        set_train_mode(model, config.train)
        parts = train_epoch(config, epoch, samples, train_cases, embeddings, step_module, optimizer, schedule,
                             steps_per_epoch, per_epoch, amp, dist)
        dsc, _, _ = validate()
        dsc = dist.broadcast(dsc)
        state.epoch, epochs_this_call = epoch, epochs_this_call + 1
        improved = dsc > state.best
        if improved:
            state.best, state.best_epoch, state.bad = dsc, epoch, 0
        else:
            state.bad += 1
        state.stopped_early = bool(config.patience) and state.bad >= config.patience  # saved with this epoch
        state.rows.append({"epoch": epoch, **parts, "lr": schedule.get_last_lr()[0], "val_dsc": dsc,
                           "seconds": time.perf_counter() - t0})
        if dist.is_main:
            if improved:
                save_best(run_dir, model)
            save_epoch(run_dir, state, model, optimizer, schedule, split)
        log(f"epoch {epoch}/{config.epochs}: loss {parts['train_loss']:.4f} (dice {parts['train_dice']:.4f}, bce "
            f"{parts['train_bce']:.4f}, iou {parts['train_iou']:.4f}), validation DSC {dsc:.4f}"
            f"{' (best so far: best.pth)' if improved else f' (best {state.best:.4f} at epoch {state.best_epoch})'}, "
            f"{time.perf_counter() - t0:.0f} s")
        if state.stopped_early:
            log(f"early stop: no better validation DSC for {state.bad} epochs")
    result = finish(config, run_dir, state, model, validate, train_cases, val_cases, samples, skipped,
                     started, finished, dist, log)
    dist.close()
    return result


def _split(config: FinetuneConfig, run_dir: Path, resume: bool, names: list[str]) -> dict[str, list[str]]:
    """The run's split: the saved one when resuming, the user's ``--split``, else a seeded draw by case."""
    if resume and (run_dir / "split.json").is_file():
        return read_split(run_dir / "split.json", names)
    if config.split:
        return read_split(config.split, names)
    return draw_split(names, config.val_fraction, config.seed, config.max_train_cases)


def _read_all(sources, config: FinetuneConfig, log: Callable[[str], None], filler=None) -> list[TrainingCase]:
    """Read every case (into the embedding cache when ``filler``); one that cannot be read is named with its
    problem and left out."""
    cases = []
    for source in sources:
        try:
            case = read_case(source, config.modality, config.window)
        except CaseError as exc:
            log(f"skipped: {exc}")
            if filler is not None:
                filler.bar.update(1)
            continue
        if filler is not None:
            filler.add(source, case)
        cases.append(case)
    return cases


def _amp(config: FinetuneConfig, device: torch.device) -> bool:
    """bf16 autocast: asked for, or (auto) on a GPU and on CPUs with bf16 units (a decoder step on the 2-core
    Xeon with AMX: 0.108 s a sample instead of 0.162 in f32)."""
    if config.amp != "auto":
        return config.amp == "on"
    if device.type == "cuda":
        return True
    from medsam_lite.train.embeddings import cpu_has_bf16

    return cpu_has_bf16()


def _embedding_source(embeddings: dict | None, case: TrainingCase):
    """``z -> embedding`` of a validation case from the cache; None (the model encodes) without one."""
    if embeddings is None:
        return None
    stack = embeddings[(case.name, False)]
    return lambda z: stack[z]


def _mean(values) -> float:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")
