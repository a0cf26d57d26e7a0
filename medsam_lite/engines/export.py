"""``medsam-lite export``: LiteMedSAM checkpoint -> OpenVINO IR (encoder, prompt encoder + decoder) + manifest.

Needs torch (to trace the model) and OpenVINO; the IR it writes is then run without torch by
``engines.openvino_engine``. Files in the export folder:
- ``image_encoder.xml/.bin``: (1, 3, 256, 256) float32 in [0, 1] -> (1, 256, 64, 64) embedding;
- ``decoder_image.xml/.bin``: embedding (1, 256, 64, 64) -> what the mask decoder computes of it whatever the
  boxes (image tokens and the first layer's projections of them, ``DECODER_IMAGE_OUTPUTS``), once per image;
- ``mask_decoder.xml/.bin``: those and one box (1, 4) at 256 -> its logits (1, 1, 256, 256) (``BOX_INPUT_SHAPE``);
- ``prompt_decoder.xml/.bin``: those and K points (1, K, 2) at 256 with SAM labels (1, K) (1/0 foreground/
  background, 2/3 box corners, -1 padding) -> logits of the four mask tokens (1, 4, 256, 256), IoU (1, 4);
- ``manifest.json``: the checkpoint's sha256 and what was exported, written last (a folder without it, or
  whose sha256 differs from the checkpoint's, is not used);
- ``cache/``: OpenVINO's compiled-model cache, filled at export so that the first run starts warm.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsam_lite.core.atomic import remove_stale
from medsam_lite.engines.checkpoint import file_sha256, load_model
from medsam_lite.engines.manifest import (BOX_INPUT_SHAPE, DECODER_IMAGE_OUTPUTS, MANIFEST_NAME, MODEL_FILES, Manifest,
                                          write_manifest)

ONNX_OPSET = 17


@dataclass
class ExportReport:
    """What export did and how close the IR is to the torch model on a random input."""

    out_dir: Path
    seconds: float
    encoder_max_abs_diff: float
    decoder_max_abs_diff: float
    notes: list[str]


def _wrappers(model):
    import torch

    from medsam_lite.modeling.common import exported_form, grid_to_tokens
    from medsam_lite.modeling.transformer import ImageProjections, PreparedImage

    def prepared(keys: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q: torch.Tensor) -> PreparedImage:
        """DecoderImage's outputs as the box and prompt graphs take them, with the dense positional encoding as
        tokens (a constant in both graphs)."""
        key_pe = grid_to_tokens(model.prompt_encoder.get_dense_pe())
        return PreparedImage(keys, key_pe, ImageProjections(k, v, q))

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            with exported_form(self.model.image_encoder):
                return self.model.encode(image)

    class DecoderImage(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, ...]:
            with exported_form(self.model.mask_decoder):
                image = self.model.prepare_decoder(embedding)
            return (image.keys, *image.first_layer)

    class DecoderBoxes(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, keys: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q: torch.Tensor,
                    boxes: torch.Tensor) -> torch.Tensor:
            image = prepared(keys, k, v, q)
            with exported_form(self.model.mask_decoder):
                return self.model.mask_decoder.predict_mask(image, self.model.prompt_encoder.embed_boxes(boxes))

    class DecoderPrompts(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, keys: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q: torch.Tensor,
                    coords: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            image = prepared(keys, k, v, q)
            with exported_form(self.model.mask_decoder):
                return self.model.decode_prompts(image, coords, labels)

    # torch.onnx.export restores the wrapper's mode afterwards: a new module is in training mode,
    # which would leave BatchNorm using batch statistics. All stay in eval mode.
    return Encoder().eval(), DecoderImage().eval(), DecoderBoxes().eval(), DecoderPrompts().eval()


EXPORT_SCRATCH = ".medsam-lite-export-"  # the temporary folder of an export under way


def _save_ir(ov, model, path: Path) -> None:
    """``ov.save_model`` (fp32 weights), whose full disk is an OSError here: OpenVINO says only "RuntimeError:
    basic_ios::clear: iostream error"; the largest part's IR is 27 MB, so less than 64 MB free after it is taken
    for the cause."""
    try:
        ov.save_model(model, path, compress_to_fp16=False)
    except RuntimeError as exc:
        if shutil.disk_usage(path.parent).free < 64 * 2**20:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from exc
        raise


def export_openvino(checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> ExportReport:
    """Export ``checkpoint`` to OpenVINO IR (fp32) in ``out_dir``, verify it against torch, warm the cache."""
    import warnings

    import torch

    from medsam_lite.engines.box_decoder import BoxDecoder
    from medsam_lite.engines.openvino_engine import compile_config
    from medsam_lite.engines.openvino_import import import_converter, import_openvino

    ov, convert_model = import_openvino(), import_converter()

    start = time.perf_counter()
    out = Path(out_dir)
    model, notes = load_model(checkpoint)
    encoder, decoder_image, decoder_boxes, decoder_prompts = _wrappers(model)
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((1, 3, 256, 256), dtype=np.float32))
    boxes = torch.tensor([[20.0, 30.0, 120.0, 160.0], [100.0, 90.0, 220.0, 250.0]])
    coords = torch.tensor([[[60.0, 70.0], [150.0, 40.0], [0.0, 0.0]]])
    labels = torch.tensor([[1.0, 0.0, -1.0]])
    with torch.no_grad():
        embedding = encoder(image)
        prepared = decoder_image(embedding)
        logits = model.decode(embedding, boxes)
        prompt_logits, prompt_iou = decoder_prompts(*prepared, coords, labels)

    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # the folder is not valid until the new manifest is written
    graphs = [  # (part, module, example inputs, input names, output names, dynamic axes)
        ("encoder", encoder, (image,), ["image"], ["embedding"], None),
        ("decoder_image", decoder_image, (embedding,), ["embedding"], list(DECODER_IMAGE_OUTPUTS), None),
        ("decoder", decoder_boxes, (*prepared, boxes[: BOX_INPUT_SHAPE[0]]), [*DECODER_IMAGE_OUTPUTS, "boxes"],
         ["logits"], None),
        ("decoder_prompts", decoder_prompts, (*prepared, coords, labels), [*DECODER_IMAGE_OUTPUTS, "coords", "labels"],
         ["logits", "iou"], {"coords": {1: "points"}, "labels": {1: "points"}}),
    ]
    remove_stale(out, f"{EXPORT_SCRATCH}*")
    with tempfile.TemporaryDirectory(prefix=EXPORT_SCRATCH, dir=out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tmp = Path(tmp)
        for part, module, inputs, input_names, output_names, dynamic_axes in graphs:
            onnx_path = tmp / f"{part}.onnx"
            torch.onnx.export(module, inputs, onnx_path, input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic_axes, opset_version=ONNX_OPSET, dynamo=False)
            _save_ir(ov, convert_model(onnx_path), tmp / MODEL_FILES[part])
        for part, *_ in graphs:
            for suffix in (".xml", ".bin"):
                name = MODEL_FILES[part].replace(".xml", suffix)
                os.replace(tmp / name, out / name)

    for cache in ("cache", "cache-bf16", "cache-int8"):  # compiled from the IR just replaced
        shutil.rmtree(out / cache, ignore_errors=True)
    core = ov.Core()
    core.set_property({"CACHE_DIR": str(out / "cache")})
    config = compile_config("f32", None)  # what the engine compiles with: this check warms its cache
    compiled = {part: core.compile_model(out / MODEL_FILES[part], "CPU", config) for part, *_ in graphs}
    ov_embedding = compiled["encoder"](image.numpy())[0]
    # The box part through the engine's own BoxDecoder (one box per call, as it takes), the prompt decoder on the
    # image tensors it prepared.
    box_decoder = BoxDecoder(*(compiled[part].create_infer_request() for part in ("decoder_image", "decoder")))
    embedding_np = embedding.numpy()  # one object: BoxDecoder prepares the image tensors once per embedding object
    ov_logits = box_decoder.logits(embedding_np, boxes.numpy())[:, None]
    ov_prompts = compiled["decoder_prompts"]([*box_decoder.prepared(embedding_np), coords.numpy(), labels.numpy()])
    report = ExportReport(
        out, 0.0,
        float(np.abs(ov_embedding - embedding.numpy()).max()),
        max(float(np.abs(ov_logits - logits.numpy()).max()), float(np.abs(ov_prompts[0] - prompt_logits.numpy()).max()),
            float(np.abs(ov_prompts[1] - prompt_iou.numpy()).max())),
        notes,
    )
    manifest = Manifest(
        checkpoint=str(checkpoint),
        checkpoint_sha256=file_sha256(checkpoint),
        openvino=ov.get_version(),
        torch=torch.__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        encoder_max_abs_diff=report.encoder_max_abs_diff,
        decoder_max_abs_diff=report.decoder_max_abs_diff,
    )
    write_manifest(out, manifest)
    report.seconds = time.perf_counter() - start
    return report
