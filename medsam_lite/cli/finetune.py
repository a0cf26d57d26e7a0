"""``medsam-lite finetune``: adapt LiteMedSAM to labelled cases (``train.finetune``); ``--resume RUN_DIR``."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from medsam_lite.cli.common import CHECKPOINT_OPTION, OFFLINE_OPTION, fail, main, say, stopped_how
from medsam_lite.core.optional import MissingDependency, require_torch
from medsam_lite.engines.checkpoint import CheckpointError

from medsam_lite.train.config import FinetuneConfig  # standard library only

DEFAULT = FinetuneConfig()


@main.command(context_settings={"show_default": True})
@click.argument("data", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", "run_dir", type=click.Path(path_type=Path), default=None,
              help="Run folder: best.pth, last.pt, metrics.csv, curves.png, summary.txt.")
@click.option("--resume", "resume_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Continue the run in this folder exactly where it stopped (its own options and split).")
@click.option("--overwrite", is_flag=True, help="Start again in a run folder that already holds a run.")
@CHECKPOINT_OPTION
@click.option("--train", type=click.Choice(["decoder", "prompt+decoder", "all", "lora"]), default="decoder",
              help="What is trained; decoder and prompt+decoder use cached embeddings (fast on a laptop).")
@click.option("--epochs", type=int, default=DEFAULT.epochs, help="At most this many epochs.")
@click.option("--samples-per-epoch", type=int, default=DEFAULT.samples_per_epoch,
              help="(slice, label) samples per epoch, drawn without repeats; 0: all.")
@click.option("--batch-size", type=int, default=DEFAULT.batch_size, help="Samples per step (all processes).")
@click.option("--lr", type=float, default=DEFAULT.lr, help="Peak learning rate (AdamW; warm-up, cosine).")
@click.option("--weight-decay", type=float, default=DEFAULT.weight_decay, help="Not on norms and biases.")
@click.option("--loss-weights", nargs=3, type=float, default=(1.0, 1.0, 1.0), metavar="DICE BCE IOU",
              help="Weights of Dice, BCE and the IoU head's MSE.")
@click.option("--jitter", type=int, default=DEFAULT.jitter, help="Box sides move up to this (pixels at 256).")
@click.option("--min-pixels", type=int, default=DEFAULT.min_pixels, help="Smaller labels (at 256) are skipped.")
@click.option("--val-fraction", type=float, default=DEFAULT.val_fraction, help="Cases held out (by case).")
@click.option("--max-train-cases", type=int, default=0, help="At most this many training cases (0: all).")
@click.option("--split", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help='Your own split: {"train": [case names], "val": [case names]}.')
@click.option("--patience", type=int, default=DEFAULT.patience, help="Early stop after this many epochs "
              "without a better validation DSC (0: never).")
@click.option("--seed", type=int, default=0, help="Split, sample order and jitter follow from it.")
@click.option("--flips", is_flag=True, help="Also train on left-right flips (their embeddings are cached too).")
@click.option("--export-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="An export of --checkpoint to encode the cache with [default: its export in $MEDSAM_LITE_HOME].")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Embedding cache [default: $MEDSAM_LITE_HOME/embeddings].")
@click.option("--cache-precision", type=click.Choice(["auto", "f32", "bf16"]), default="auto",
              help="Encoder precision of the cache; auto: bf16 where the CPU has bf16 units.")
@click.option("--lora-rank", type=int, default=DEFAULT.lora_rank, help="Rank of the adapters (--train lora).")
@click.option("--amp", type=click.Choice(["auto", "on", "off"]), default="auto", help="bf16 autocast in training steps.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="auto: a GPU if there is one.")
@click.option("--threads", type=int, default=None, help="CPU threads for torch and OpenVINO.")
@click.option("--modality", type=click.Choice(["CT", "MR", "other", "raw"], case_sensitive=False), default=None,
              help="Intensity rule for image + label folders (as for segment).")
@click.option("--window", nargs=2, type=float, default=None, metavar="LOW HIGH", help="CT window for image + label folders.")
@click.option("--stop-after", type=int, default=None, help="Stop after this many epochs of this session (resume later).")
@OFFLINE_OPTION
def finetune(data: tuple[Path, ...], run_dir: Path | None, resume_dir: Path | None, overwrite: bool, checkpoint: Path | None,
             train: str, epochs: int, samples_per_epoch: int, batch_size: int, lr: float, weight_decay: float,
             loss_weights: tuple[float, float, float], jitter: int, min_pixels: int, val_fraction: float,
             max_train_cases: int, split: Path | None, patience: int, seed: int, flips: bool, export_dir: Path | None,
             cache_dir: Path | None,
             cache_precision: str, lora_rank: int, amp: str, device: str, threads: int | None, modality: str | None,
             window: tuple[float, float] | None, stop_after: int | None, offline: bool) -> None:
    """Fine-tune LiteMedSAM on labelled cases in DATA folders (imgs/ + gts/ challenge npz, or images/ + labels/).

    The best weights (validation DSC, split by case) land in RUN_DIR/best.pth as a plain state dict: give them to
    predict, export, serve or a --model-map entry as any checkpoint. Data-parallel:
    torchrun --nproc_per_node N -m medsam_lite finetune ...
    """
    from medsam_lite.train.run_dir import RunDirError

    try:
        require_torch("medsam-lite finetune")
    except MissingDependency as exc:
        fail(str(exc))
    if resume_dir is not None:
        if not (resume_dir / "config.json").is_file():
            fail(f"{resume_dir}: not a run folder (no config.json); start one with -o {resume_dir}")
        config = FinetuneConfig.load(resume_dir / "config.json")
        config.run_dir = str(resume_dir)
        if data or run_dir:
            say(f"note: --resume continues {resume_dir} with its own data and options; the others given are ignored")
    else:
        if not data or run_dir is None:
            fail("give the data folder(s) and -o RUN_DIR (or --resume RUN_DIR)")
        config = FinetuneConfig(
            data=[str(p.resolve()) for p in data], run_dir=str(run_dir), checkpoint=str(checkpoint) if checkpoint else None,
            train=train, epochs=epochs, samples_per_epoch=samples_per_epoch, batch_size=batch_size, lr=lr,
            weight_decay=weight_decay, dice_weight=loss_weights[0], bce_weight=loss_weights[1],
            iou_weight=loss_weights[2], jitter=jitter, min_pixels=min_pixels, val_fraction=val_fraction,
            max_train_cases=max_train_cases, split=str(split) if split else None, patience=patience, seed=seed,
            flips=flips, export_dir=str(export_dir) if export_dir else None,
            cache_dir=str(cache_dir) if cache_dir else None, cache_precision=cache_precision,
            lora_rank=lora_rank, amp=amp, device=device, threads=threads, modality=modality,
            window=tuple(window) if window else None)
    from medsam_lite.engines.weights import WeightsError
    from medsam_lite.train.loop import finetune as run

    try:
        run(config, resume=resume_dir is not None, overwrite=overwrite, stop_after=stop_after, allow_fetch=not offline,
            say=say)
    except (RunDirError, CheckpointError, WeightsError, ValueError) as exc:
        fail(str(exc))
    except OSError as exc:
        from medsam_lite.core.atomic import disk_full, why_not_written

        if not disk_full(exc):
            raise
        fail(f"cannot write {exc.filename or 'a file of the run'}: {why_not_written(exc)} (nothing half-written was "
             f"left). Free space there, then `medsam-lite finetune --resume {config.run_dir}` continues the run (from "
             f"its last finished epoch; the slices already encoded stay in the embedding cache)")
    except KeyboardInterrupt as exc:  # Ctrl+C, or SIGTERM (a scheduler's time limit; the group raises it)
        how, code = stopped_how(exc)
        click.echo(f"stopped by {how}: `medsam-lite finetune --resume {config.run_dir}` continues from the last "
                   "finished epoch (last.pt; the slices already encoded stay in the embedding cache)", err=True)
        sys.exit(code)

