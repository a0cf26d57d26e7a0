"""What a fine-tuning run is asked to do (``FinetuneConfig``), saved as ``config.json`` in the run folder so
that ``--resume RUN_DIR`` continues exactly the run that was started."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

TRAIN_MODES = ("decoder", "prompt+decoder", "all", "lora")
CACHED_MODES = ("decoder", "prompt+decoder")  # the encoder is frozen: embeddings come from the disk cache


@dataclass
class FinetuneConfig:
    """Every option of ``medsam-lite finetune``; the defaults are what ``finetune FOLDER -o RUN`` does."""

    data: list[str] = field(default_factory=list)  # challenge npz folders (imgs/ + gts/) or images/ + labels/ folders
    run_dir: str = ""  # where best.pth, last.pt, metrics.csv, curves.png and summary.txt go
    checkpoint: str | None = None  # starting weights; None: the official LiteMedSAM weights (fetched once)
    train: str = "decoder"  # what is trained: decoder | prompt+decoder | all | lora (see TRAIN_MODES)
    epochs: int = 10  # at most this many epochs (early stopping may end sooner)
    samples_per_epoch: int = 2000  # (slice, label) samples drawn per epoch, without repeats; 0: all of them
    batch_size: int = 8  # samples per optimiser step, over all processes
    lr: float = 4e-4  # peak learning rate (AdamW); hippocampus, 3 epochs: 4e-4 reached DSC 0.626, 2e-4 0.608
    weight_decay: float = 0.01  # AdamW weight decay; never on norms, biases, embeddings
    warmup: float = 0.05  # fraction of all steps with a linear warm-up, then cosine to zero
    dice_weight: float = 1.0  # loss = dice_weight * Dice + bce_weight * BCE + iou_weight * MSE(IoU head, IoU)
    bce_weight: float = 1.0
    iou_weight: float = 1.0
    jitter: int = 5  # box sides move by up to this many pixels at 256, each side and both ways (training only)
    min_pixels: int = 10  # labels with fewer pixels at 256 on a slice are skipped (and counted)
    val_fraction: float = 0.25  # share of the cases held out for validation (split by case, never by slice)
    max_train_cases: int = 0  # at most this many training cases (0: all that are not validation cases)
    split: str | None = None  # a split.json to use ({"train": [names], "val": [names]}) instead of drawing one
    patience: int = 3  # stop after this many epochs without a better validation DSC (0: never)
    seed: int = 0  # the split, the sample order and the box jitter all follow from it
    flips: bool = False  # also train on left-right flipped slices (their embeddings are cached too: 2x encoding)
    export_dir: str | None = None  # an export of ``checkpoint`` to encode the cache with (default: its per-digest one)
    cache_dir: str | None = None  # embedding cache; None: $MEDSAM_LITE_HOME/embeddings
    cache_precision: str = "auto"  # encoder precision for the cache: f32, bf16, auto (bf16 where the CPU has it)
    lora_rank: int = 4  # rank of the encoder's low-rank adapters (--train lora)
    amp: str = "auto"  # bf16 autocast for training steps: on, off, auto (CPUs with bf16 units, and GPUs)
    device: str = "auto"  # cpu, cuda, auto (cuda when there is one)
    threads: int | None = None  # torch / OpenVINO threads; None: the library defaults
    modality: str | None = None  # image + label pairs: intensity rule as for `segment` (CT, MR, other, raw)
    window: tuple[float, float] | None = None  # CT window (low, high) for image + label pairs

    def save(self, path: Path) -> None:
        from medsam_lite.core.atomic import write_with

        write_with(path, lambda handle: handle.write(json.dumps(asdict(self), indent=2) + "\n"), mode="w")

    @classmethod
    def load(cls, path: Path) -> "FinetuneConfig":
        raw = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in raw.items() if k in known})
        if config.window is not None:
            config.window = tuple(config.window)  # type: ignore[assignment]
        return config

    def check(self) -> None:
        """ValueError naming the option that cannot work."""
        if self.train not in TRAIN_MODES:
            raise ValueError(f"--train must be one of {', '.join(TRAIN_MODES)}, got {self.train!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.samples_per_epoch < 0:
            raise ValueError("--epochs and --batch-size must be at least 1, --samples-per-epoch at least 0")
        if not 0 < self.val_fraction < 1 and self.split is None:
            raise ValueError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        if self.cache_precision not in ("auto", "f32", "bf16"):
            raise ValueError(f"--cache-precision must be auto, f32 or bf16, got {self.cache_precision!r}")
        if self.amp not in ("auto", "on", "off"):
            raise ValueError(f"--amp must be auto, on or off, got {self.amp!r}")
