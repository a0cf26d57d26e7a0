"""LiteMedSAM's box decoder in OpenVINO: two compiled parts, the image part (once per embedding) and the box
part (per chunk of boxes), with the image part's outputs bound to the box part's request.

The OpenVINO engine runs the exported parts; fine-tuning's validation runs the same class on parts converted
from the model being trained (``decoder_models``), so that it scores what ``predict`` would compute.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from medsam_lite.core.postprocess import full_masks
from medsam_lite.core.timing import stage
from medsam_lite.engines.manifest import DECODER_IMAGE_OUTPUTS
from medsam_lite.engines.openvino_import import import_openvino

ov = import_openvino()

# Boxes per decoder inference. Measured on 33 boxes (2 cores, best of 3, two runs): 1 per call 16.1-18.4 ms/box
# and 340 MiB peak RSS, 8 per call 17.1-19.3 ms/box and 610 MiB, all 33 in one call 16.5-19.2 ms/box and 1568 MiB.
# Again with the exported attention form (export format 4; 24 boxes on one slice, best of 3): 1 per call
# 14.3 ms/box, 4 per call 12.9, all 24 15.7 (the format-3 graph in the same run: 19.2, 19.1, 21.7). One box per
# call stays: the 10 % at 4 is within run-to-run spread here and a box's logits then never depend on its batch.
DECODE_CHUNK = 1


class BoxDecoder:
    """Infer requests of the decoder's image part and box part."""

    def __init__(self, prepare_request, decode_request) -> None:
        self._prepare_request = prepare_request
        self._decode_request = decode_request
        self._prepared_of: np.ndarray | None = None
        self._prepared_tensors: list = []

    def prepared(self, embedding: np.ndarray) -> list:
        """The decoder's per-image tensors of ``embedding``: computed once per embedding object, so that the
        service's prompts on a cached slice (the same object each time) skip this part (about 10 ms)."""
        if self._prepared_of is not embedding:
            out = self._prepare_request.infer([embedding])
            self._prepared_tensors = [ov.Tensor(np.array(out[i])) for i in range(len(DECODER_IMAGE_OUTPUTS))]
            self._prepared_of = embedding
        return self._prepared_tensors

    def logits(self, embedding: np.ndarray, boxes_256: np.ndarray) -> np.ndarray:
        """(1, 256, 64, 64) embedding, (N, 4) boxes at 256 -> (N, 256, 256) low-res logits, DECODE_CHUNK boxes
        at a time."""
        boxes = np.ascontiguousarray(boxes_256, dtype=np.float32)
        if len(boxes) == 0:
            return np.zeros((0, 256, 256), np.float32)
        for i, tensor in enumerate(self.prepared(embedding)):
            self._decode_request.set_input_tensor(i, tensor)
        box_input = len(DECODER_IMAGE_OUTPUTS)
        parts = []
        for i in range(0, len(boxes), DECODE_CHUNK):
            self._decode_request.set_input_tensor(box_input, ov.Tensor(boxes[i : i + DECODE_CHUNK]))
            self._decode_request.infer()
            parts.append(self._decode_request.get_output_tensor(0).data[:, 0].copy())
        return np.concatenate(parts)

    def masks(self, embedding: np.ndarray, boxes_256: np.ndarray, resized: tuple[int, int],
              original: tuple[int, int]) -> Iterator[np.ndarray]:
        """Boolean (H, W) masks in box order; only the part that can be foreground is upsampled."""
        with stage("decoder"):
            logits = self.logits(embedding, boxes_256)
        yield from full_masks(logits, resized, original)


def decoder_models(model) -> tuple:
    """(image part, box part) as OpenVINO models converted from a torch LiteMedSAM (on the CPU) as it is now:
    the exported graphs (``engines.export``'s wrappers), without files. About 6 s on 2 cores."""
    import warnings

    import torch

    from medsam_lite.engines.export import _wrappers
    from medsam_lite.engines.openvino_import import import_converter

    convert_model = import_converter()
    _, image_part, box_part, _ = _wrappers(model)
    embedding = torch.zeros(1, 256, 64, 64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing's notes on constants (the attention scale) and deprecations
        prepared = image_part(embedding)
        boxes = torch.tensor([[20.0, 30.0, 120.0, 160.0]])
        image_model = convert_model(image_part, example_input=(embedding,), input=[(1, 256, 64, 64)])
        box_model = convert_model(box_part, example_input=(*prepared, boxes),
                                     input=[tuple(t.shape) for t in prepared] + [(-1, 4)])
    return image_model, box_model


def compile_box_decoder(image_model, box_model, config: dict) -> BoxDecoder:
    """A BoxDecoder from in-memory OpenVINO models."""
    core = ov.Core()
    return BoxDecoder(core.compile_model(image_model, "CPU", config).create_infer_request(),
                      core.compile_model(box_model, "CPU", config).create_infer_request())
