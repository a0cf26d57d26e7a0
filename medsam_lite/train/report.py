"""The end of a run: the best weights scored once more with NSD on the validation cases, per-case scores
before and after (``val_cases.csv``), and the one-paragraph ``summary.txt`` (with ``summary.json``)."""
from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from medsam_lite.train.config import FinetuneConfig
from medsam_lite.train.distributed import Distributed
from medsam_lite.train.run_dir import save_atomic
from medsam_lite.train.state import RunState


def finish(config: FinetuneConfig, run_dir: Path, state: RunState, model, validate: Callable, train_cases, val_cases,
           samples, skipped: int, started: float, finished: bool, dist: Distributed, log: Callable[[str], None]):
    from medsam_lite.train.loop import FinetuneResult

    dsc_after, nsd_after = state.best, None
    if finished and dist.is_main:
        best = torch.load(run_dir / "best.pth", map_location="cpu", weights_only=True)
        _load_official(model, best)
        dsc_after, nsd_after, scores = validate(nsd=True)
        _write_cases(run_dir / "val_cases.csv", state.before, {s.name: asdict(s) for s in scores})
    result = FinetuneResult(
        run_dir=str(run_dir), best_checkpoint=str(run_dir / "best.pth"), train_cases=len(train_cases),
        val_cases=len(val_cases), samples=len(samples), skipped_small=skipped, epochs_run=state.epoch,
        best_epoch=state.best_epoch, val_dsc_before=state.dsc_before, val_dsc_after=dsc_after,
        val_nsd_before=state.nsd_before, val_nsd_after=nsd_after, seconds=time.perf_counter() - started,
        finished=finished)
    if dist.is_main and finished:
        text = summary_text(config, result)
        save_atomic(run_dir / "summary.txt", lambda tmp: tmp.write_text(text + "\n"))
        save_atomic(run_dir / "summary.json", lambda tmp: tmp.write_text(json.dumps(asdict(result), indent=1) + "\n"))
        log(text)
    elif dist.is_main:
        log(f"stopped after epoch {state.epoch} of {config.epochs}; continue with: medsam-lite finetune --resume {run_dir}")
    return result


def _load_official(model, weights: dict) -> None:
    """Load an official-layout state dict into the (possibly adapter-wrapped) model being trained."""
    from medsam_lite.train.trainable import LoRALinear

    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            torch.nn.init.zeros_(module.lora_b)  # the merged weight goes into base
            weights = {(k.replace(f"{name}.", f"{name}.base.", 1) if k.startswith(f"{name}.") else k): v
                       for k, v in weights.items()}
    model.load_state_dict(weights, strict=False)


def summary_text(config: FinetuneConfig, r) -> str:
    nsd = ""
    if r.val_nsd_before is not None and r.val_nsd_after is not None:
        nsd = f", NSD {r.val_nsd_before:.4f} -> {r.val_nsd_after:.4f}"
    return (f"Fine-tuned ({config.train}) from {config.checkpoint or 'the official LiteMedSAM weights'} on "
            f"{r.train_cases} cases ({r.samples} slice-label samples, {r.skipped_small} too small at 256 skipped), "
            f"validated on {r.val_cases} other cases: {r.epochs_run} epochs in {r.seconds / 60:.1f} min; validation "
            f"DSC {r.val_dsc_before:.4f} (starting weights) -> {r.val_dsc_after:.4f} (best.pth, epoch "
            f"{r.best_epoch}){nsd}. best.pth loads into predict, export, serve and the official script as it is.")


def _write_cases(path: Path, before: dict, after: dict) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["case", "dsc_before", "nsd_before", "dsc_after", "nsd_after"])
            for name in sorted(after):
                b, a = before.get(name, {}), after[name]
                out.writerow([name] + [_fmt(v) for v in (b.get("dsc"), b.get("nsd"), a["dsc"], a["nsd"])])

    save_atomic(path, write)


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4f}"
