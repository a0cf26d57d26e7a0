"""A run's state between epochs: what ``last.pt`` holds for an exact ``--resume``, and ``best.pth``."""
from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medsam_lite.train.run_dir import draw_curves, save_atomic, write_metrics
from medsam_lite.train.trainable import official_state_dict


@dataclass
class RunState:
    """Where the run is: epochs done, best validation DSC and when, epochs since, and the rows so far."""

    epoch: int = 0
    best: float = float("-inf")
    best_epoch: int = 0
    bad: int = 0  # epochs since the best one
    stopped_early: bool = False
    dsc_before: float = float("nan")
    nsd_before: float | None = None
    before: dict = field(default_factory=dict)  # per validation case, the starting weights' scores
    rows: list[dict] = field(default_factory=list)


def _cpu(value):
    """Tensors (nested in dicts and lists) moved to the CPU, so that a GPU run's last.pt loads anywhere."""
    if torch.is_tensor(value):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu(v) for v in value)
    return value


def _saved(obj) -> bytes:
    """``torch.save``'s bytes: written by Python, a full disk is an OSError naming its cause (torch's own file
    writer ends one with "RuntimeError: [enforce fail at inline_container.cc] unexpected pos")."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_best(run_dir: Path, model: torch.nn.Module) -> None:
    """best.pth: the model's weights as a plain state dict in the official layout."""
    weights = official_state_dict(model)
    save_atomic(run_dir / "best.pth", lambda tmp: tmp.write_bytes(_saved(weights)))


def save_epoch(run_dir: Path, state: RunState, model, optimizer, schedule, split: dict) -> None:
    """last.pt, metrics.csv and curves.png after an epoch."""
    payload = {
        "model": _cpu(model.state_dict()),
        "optimizer": _cpu(optimizer.state_dict()),
        "schedule": schedule.state_dict(),
        "state": state.__dict__,
        "split": split,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
    }
    save_atomic(run_dir / "last.pt", lambda tmp: tmp.write_bytes(_saved(payload)))
    write_metrics(run_dir / "metrics.csv", state.rows)
    draw_curves(run_dir / "curves.png", state.rows)


def load_last(run_dir: Path, model, optimizer, schedule, device: torch.device) -> RunState:
    """Restore ``last.pt`` into the model, optimiser and schedule (on ``device``); returns the run's state."""
    payload = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(payload["model"])
    model.to(device)
    optimizer.load_state_dict(payload["optimizer"])
    schedule.load_state_dict(payload["schedule"])
    torch.set_rng_state(payload["rng"]["torch"])
    np.random.set_state(payload["rng"]["numpy"])
    random.setstate(payload["rng"]["python"])
    return RunState(**payload["state"])
