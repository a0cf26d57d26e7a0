"""LiteMedSAM's box decoder in OpenVINO: two compiled parts, the image part (once per embedding) and the box
part (per chunk of boxes), with the image part's outputs bound to the box part's request.

The OpenVINO engine runs the exported parts; fine-tuning's validation runs the same class on parts converted
from the model being trained (``decoder_models``), so that it scores what ``predict`` would compute.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from medsam_lite.core.postprocess import full_masks
from medsam_lite.core.timing import stage
from medsam_lite.engines.manifest import BOX_INPUT_SHAPE, DECODER_IMAGE_OUTPUTS
from medsam_lite.engines.openvino_import import import_openvino

ov = import_openvino()

# One box per inference (the exported box part takes exactly one since format 8: manifest.BOX_INPUT_SHAPE, where
# the static shape's gain is measured). Measured on 33 boxes (2 cores, best of 3, two runs): 1 per call 16.1-18.4
# ms/box and 340 MiB peak RSS, 8 per call 17.1-19.3 ms/box and 610 MiB, all 33 in one call 16.5-19.2 ms/box and
# 1568 MiB.
# Again with the exported attention form (export format 4; 24 boxes on one slice, best of 3): 1 per call
# 14.3 ms/box, 4 per call 12.9, all 24 15.7: within run-to-run spread, and a box's logits then never depend on
# its batch. What does pay is boxes side by side on one thread each (``parallel``, openvino_engine's
# ``streams_config``; the same logits bit for bit): ms per box in the pipeline (2 slices of the
# microscopy volume, best of 6, twice), in turn / side by side: 2 boxes 16.2 / 16.2 and 15.9 / 14.8, 3 boxes
# 14.0 / 14.8 (the odd one waits), 4 boxes 13.2 / 12.5, 8 boxes 12.4 / 11.5, 24 boxes 11.6 / 10.5. The streams'
# model compiles in 30 ms (from the model cache) and costs about 110 MiB more peak memory (AMOS CT: 621 -> 748
# MiB, for no measurable gain with its 1-15 boxes a slice), so it is made only where that pays: a call of
# MIN_SIDE_BY_SIDE boxes or more once the process has decoded STREAMS_AFTER boxes (the 3D microscopy case, 24
# boxes a slice, two fresh processes each, interleaved: decoder 33.9, 33.6 -> 30.7, 31.3 s, whole case 70.4,
# 70.2 -> 66.8, 67.9 s, same masks; AMOS unchanged in time and peak memory; a single 2D image never).
MIN_SIDE_BY_SIDE = 16
STREAMS_AFTER = 100


class BoxDecoder:
    """Infer requests of the decoder's image part and box part.

    ``parallel``: None, or a callable that returns requests of the box part compiled as several streams of
    one thread each (made on first use); calls of MIN_SIDE_BY_SIDE or more boxes after the first STREAMS_AFTER
    boxes are then decoded side by side, one box per stream and call, as with ``decode_request``."""

    def __init__(self, prepare_request, decode_request, parallel: Callable[[], list] | None = None) -> None:
        self._prepare_request = prepare_request
        self._decode_request = decode_request
        self._parallel = parallel
        self._stream_requests: list | None = None
        self._prepared_of: np.ndarray | None = None
        self._prepared_tensors: list = []
        self.threads = int(decode_request.get_compiled_model().get_property("INFERENCE_NUM_THREADS"))
        self.decoded = 0  # boxes decoded so far (the streams are made only after STREAMS_AFTER)

    def prepared(self, embedding: np.ndarray) -> list:
        """The decoder's per-image tensors of ``embedding``: computed once per embedding object, so that the
        service's prompts on a cached slice (the same object each time) skip this part (about 10 ms)."""
        if self._prepared_of is not embedding:
            out = self._prepare_request.infer([embedding])
            self._prepared_tensors = [ov.Tensor(np.array(out[i])) for i in range(len(DECODER_IMAGE_OUTPUTS))]
            self._prepared_of = embedding
        return self._prepared_tensors

    def _streams(self) -> list:
        """The box part's requests on streams of one thread each ([] where there are none)."""
        if self._stream_requests is None:
            self._stream_requests = self._parallel() if self._parallel is not None else []
        return self._stream_requests

    def logits(self, embedding: np.ndarray, boxes_256: np.ndarray) -> np.ndarray:
        """(1, 256, 64, 64) embedding, (N, 4) boxes at 256 -> (N, 256, 256) low-res logits, one box per call:
        as many side by side as there are streams (see MIN_SIDE_BY_SIDE), the rest in turn on the request of
        all threads."""
        boxes = np.ascontiguousarray(boxes_256, dtype=np.float32).reshape(-1, 4)
        out = np.empty((len(boxes), 256, 256), np.float32)
        if len(boxes) == 0:
            return out
        streams = self._streams() if len(boxes) >= MIN_SIDE_BY_SIDE and self.decoded >= STREAMS_AFTER else []
        self.decoded += len(boxes)
        paired = len(boxes) - len(boxes) % len(streams) if len(streams) > 1 else 0
        image_tensors = self.prepared(embedding)
        for request in [self._decode_request, *(streams if paired else [])]:
            for i, tensor in enumerate(image_tensors):
                request.set_input_tensor(i, tensor)
        for start in range(0, paired, len(streams) or 1):
            group = list(enumerate(streams, start))
            for i, request in group:
                self._start(request, boxes[i : i + 1])
            for i, request in group:
                request.wait()
                out[i] = request.get_output_tensor(0).data[0, 0]
        for i in range(paired, len(boxes)):
            self._decode_request.set_input_tensor(len(DECODER_IMAGE_OUTPUTS), ov.Tensor(boxes[i : i + 1]))
            self._decode_request.infer()
            out[i] = self._decode_request.get_output_tensor(0).data[0, 0]
        return out

    @staticmethod
    def _start(request, box: np.ndarray) -> None:
        """Start decoding one (1, 4) box on ``request`` (its image inputs already set)."""
        request.set_input_tensor(len(DECODER_IMAGE_OUTPUTS), ov.Tensor(box))
        request.start_async()

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
                                     input=[tuple(t.shape) for t in prepared] + [BOX_INPUT_SHAPE])
    return image_model, box_model


def compile_box_decoder(image_model, box_model, config: dict) -> BoxDecoder:
    """A BoxDecoder from in-memory OpenVINO models."""
    core = ov.Core()
    return BoxDecoder(core.compile_model(image_model, "CPU", config).create_infer_request(),
                      core.compile_model(box_model, "CPU", config).create_infer_request())
