"""The OpenVINO engine: the exported IR run with numpy + OpenCV + OpenVINO only (no torch, no matplotlib).

The image encoder is compiled (from the model cache: about 0.14 s on 2 cores) on a thread of its own, the
decoders on the caller's: OpenVINO releases the GIL while it compiles, so whatever the caller does next
(hashing the checkpoint, importing the pipeline, listing the cases) runs beside it. ``ready()`` waits for it;
the first ``encode`` does too. Compiling while the first case is read was measured before (2-core AMD EPYC,
8 interleaved fresh-process runs): no gain, as reading a case takes 20-40 ms and the encoder's inference
needs both cores; so the case starts after ``ready()``.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from medsam_lite.core.timing import stage
from medsam_lite.engines.box_decoder import BoxDecoder
from medsam_lite.engines.cpu import pair_rule
from medsam_lite.engines.decoder_bf16 import box_decoder_in_bf16
from medsam_lite.engines.encoder_split import ChainedRequest, mixed_encoder
from medsam_lite.engines.linears_bf16 import linears_in_bf16
from medsam_lite.engines.manifest import DECODER_IMAGE_OUTPUTS, MODEL_FILES, ExportError, read_manifest
from medsam_lite.engines.openvino_import import import_openvino
from medsam_lite.engines.precision import resolve
from medsam_lite.engines.store import remedy

ov = import_openvino()


def compile_config(precision: str, threads: int | None) -> dict:
    """CPU plugin settings: latency mode, one stream, f32 unless bf16, int8 or mixed was asked for explicitly
    (int8: the int8 encoder's linears in int8, its other layers under the bf16 hint, batch.int8 says why; mixed:
    these are the settings of the encoder's tail, its head compiles f32, engines.encoder_split says why;
    bf16-linears compiles f32, its bf16 is in the graph, engines.linears_bf16)."""
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_PRECISION_HINT": "bf16" if precision in ("bf16", "int8", "mixed") else "f32",
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def streams_config(config: dict, threads: int) -> dict | None:
    """``config`` as two streams sharing ``threads`` (None for a single thread): two inferences side by side,
    each on half the threads, instead of each on all threads in turn. The results are the same bit for bit.

    The decoder's box part: a box's many small operations (7 prompt tokens) leave threads waiting on each other.
    Measured on the 2-core Xeon with AMX (24 boxes of the microscopy volume's middle slice, best of 5, twice):
    one box at a time on both threads 11.2 ms/box, on one thread 20.0, two side by side on one thread each
    9.9-10.0 (1.12x); on the 2-core AMD EPYC Zen 5 (the same boxes, 12 rounds interleaved) 7.19 -> 6.82 ms/box.
    The encoder (``OpenVINOEngine.encode_pair``) pays only on some kinds of CPU (``engines.cpu.PAIR_RULES``): on
    the AMD EPYC Zen 4, whose spread (a round 518-797 ms) hits two threads in lock-step harder than two
    independent ones, 591 -> 568 ms a slice; on the Xeon nothing, on the Zen 5 4 % lost. Two streams, not one per
    thread: each costs its own memory (about 55 MiB for the box part; the encoder's pair about 180-240 MiB,
    microscopy 3D peak RSS 644 -> 887 MiB on the Zen 4, 627 -> 807 on the Zen 5), and more were never measured.
    Their compiled form comes from the same model-cache entry as the one-stream model's (OpenVINO's cache key
    leaves the stream count out): ``check`` fills it for both."""
    if threads < 2:
        return None
    streams = {key: value for key, value in config.items() if key != "PERFORMANCE_HINT"}
    return {**streams, "NUM_STREAMS": 2, "INFERENCE_NUM_THREADS": threads - threads % 2}


def model_cache_dir(export_dir: Path, precision: str = "f32") -> Path | None:
    """``export_dir/cache`` (``cache-bf16``, ``cache-int8``, ... for the approximate precisions; made
    if possible) when it can be read: compiled models load from it in about half the time of a compile. A cache
    this user cannot write is still read (a runtime image ships one made at build time); a missing model there is
    then compiled, and not stored. One folder per precision: on a 2-core Xeon with AMX (OpenVINO 2026.4.1), a
    bf16 encoder compiled into the folder that already held the f32 models crashed the process at its first
    inference (every time; fine in a folder of its own or with no cache)."""
    cache = export_dir / ("cache" if precision == "f32" else f"cache-{precision}")
    try:
        cache.mkdir(exist_ok=True)
    except OSError:
        pass
    return cache if cache.is_dir() and os.access(cache, os.R_OK | os.X_OK) else None


class OpenVINOEngine:
    """LiteMedSAM from an export folder (``medsam-lite export``).

    ``background=True``: return while the encoder still compiles (``ready()`` waits and raises its
    ExportError); otherwise everything is compiled when the engine is made."""

    name = "openvino"

    def __init__(self, export_dir: str | os.PathLike[str], precision: str = "f32", threads: int | None = None,
                 background: bool = False) -> None:
        chosen = resolve(precision)  # ValueError for an unknown one; `fast` -> the mode measured for this CPU
        precision = chosen.mode
        self.export_dir = Path(export_dir)
        manifest = read_manifest(self.export_dir)
        if manifest is None:
            raise ExportError(f"no OpenVINO export in {self.export_dir}; run `medsam-lite export --checkpoint PATH`")
        if precision == "int8":
            remake = f"`medsam-lite export --checkpoint {manifest.checkpoint} --out {self.export_dir} --int8 CASES_DIR`"
            if not manifest.int8_encoder:
                raise ExportError(f"the export in {self.export_dir} has no int8 encoder; run {remake}")
            if not manifest.int8_linears_only:
                raise ExportError(f"the int8 encoder in {self.export_dir} has every layer in int8 (made before "
                                  f"2026-12-05; it loses up to 0.16 DSC on a real case); re-run {remake}")
        self.manifest = manifest
        self.precision = precision  # the mode that runs (f32, bf16, int8, mixed, bf16-linears)
        self.precision_label = chosen.label  # the timing CSV's: the mode, "fast=" before it when fast chose it
        self.notes: list[str] = []
        core = ov.Core()
        cache = model_cache_dir(self.export_dir, precision)
        if cache is not None:
            core.set_property({"CACHE_DIR": str(cache)})
        self._core = core
        self._encoder_file = MODEL_FILES["encoder_int8" if precision == "int8" else "encoder"]
        # The precision applies to the encoder; the decoder's parts compile f32. Measured on the 2-core AMD EPYC
        # Zen 5 (official weights, the 42 labelled cases of bench_precision.py): the bf16 hint on every part cost
        # mean DSC -0.0137 and the fundus case 0.41 -> 0.14; on the encoder alone mean DSC -0.0071, fundus -0.007,
        # worst case -0.058 (docs/precision.md). Only `mixed` rounds the box part too, its largest products alone,
        # by conversions in its graph (engines.decoder_bf16: the 42 cases' worst case no worse).
        self._encoder_config, self._decoder_config = compile_config(precision, threads), compile_config("f32", threads)
        self._box_model = None  # the box part rewritten for mixed (None: the export's file as it is)
        self._encode_request = None
        self._encoder_model = None  # the encoder rewritten for bf16-linears (None: the export's file as it is)
        self._encode_streams: list | None = None  # encode_pair's requests, compiled on its first call
        # whether a volume's slices go two side by side (segment_3d, encode_pair): where that was measured to pay
        # on this kind of CPU (engines.cpu.PAIR_RULES); the embeddings are the same either way
        self.slice_pairs = pair_rule().pairs
        self._encoder_error: ExportError | None = None
        self._encoder_thread = threading.Thread(target=self._compile_encoder, name="compile-encoder", daemon=True)
        self._encoder_thread.start()
        try:
            if precision == "mixed":
                self._box_model = box_decoder_in_bf16(self._read_model(MODEL_FILES["decoder"]))
            self._boxes = BoxDecoder(self._compile(MODEL_FILES["decoder_image"]),
                                     self._compile(MODEL_FILES["decoder"], self._box_model), self._box_streams)
        except BaseException:
            self.wait()  # never leave a compilation running behind an error (it aborts an exiting interpreter)
            raise
        if not background:
            self.ready()
        self._prompt_request = None  # the point-prompt decoder: compiled on first use (the service), not by predict
        self.encoder_passes = 0

    def _compile(self, model_file: str, model=None):
        """An infer request of ``export_dir/model_file`` (or ``model``, its rewritten form; ``_compiled``)."""
        return self._compiled(model_file, model=model).create_infer_request()

    def _config(self, model_file: str) -> dict:
        """The CPU plugin settings ``model_file`` compiles with: the precision's for the encoder, f32 otherwise."""
        return self._encoder_config if model_file == self._encoder_file else self._decoder_config

    def _compiled(self, model_file: str, config: dict | None = None, model=None):
        """``export_dir/model_file`` (or ``model``, a part of it) compiled with ``config`` (default ``_config``'s);
        ExportError (one line) when OpenVINO cannot load it."""
        try:
            source = self.export_dir / model_file if model is None else model
            return self._core.compile_model(source, "CPU", config or self._config(model_file))
        except RuntimeError as exc:
            raise self._load_error(model_file, exc) from exc

    def _read_model(self, model_file: str):
        """``export_dir/model_file`` as an ``ov.Model`` to rewrite; ExportError (one line) when it cannot be read."""
        try:
            return self._core.read_model(self.export_dir / model_file)
        except RuntimeError as exc:
            raise self._load_error(model_file, exc) from exc

    def _load_error(self, model_file: str, exc: RuntimeError) -> ExportError:
        reason = " ".join(str(exc).split())  # OpenVINO's messages span lines
        return ExportError(f"the OpenVINO export in {self.export_dir} could not be loaded: {model_file}: {reason}; "
                           f"{remedy(self.export_dir)}")

    def _box_streams(self) -> list:
        """Requests of the decoder's box part on two streams sharing the threads the box part gets on its own
        (compiled when BoxDecoder first decodes boxes side by side); [] with one thread."""
        return self._stream_requests(MODEL_FILES["decoder"], self._boxes.threads, self._box_model)

    def _stream_requests(self, model_file: str, threads: int, model=None) -> list:
        """Requests of ``export_dir/model_file`` (or ``model``, its rewritten form) compiled as two streams sharing
        ``threads`` (``streams_config``); [] for a single thread."""
        config = streams_config(self._config(model_file), threads)
        if config is None:
            return []
        compiled = self._compiled(model_file, config, model)
        return [compiled.create_infer_request() for _ in range(config["NUM_STREAMS"])]

    def _compile_encoder(self) -> None:
        """The encoder thread's work: its infer request, or the error that ``ready()`` raises."""
        try:
            if self.precision == "mixed":  # the head (stage 0) f32 but its MBConv projections, the tail bf16
                head, tail = mixed_encoder(self._read_model(self._encoder_file))
                f32 = self._decoder_config  # every decoder part's settings are f32's
                self._encode_request = ChainedRequest(
                    self._compiled(self._encoder_file, f32, head).create_infer_request(),
                    self._compiled(self._encoder_file, self._encoder_config, tail).create_infer_request())
            else:
                if self.precision == "bf16-linears":  # the linears on the bf16 units, the rest f32
                    self._encoder_model = linears_in_bf16(self._read_model(self._encoder_file))
                compiled = self._compiled(self._encoder_file, model=self._encoder_model)
                self._encode_request = compiled.create_infer_request()
        except ExportError as exc:
            self._encoder_error = exc
        except Exception as exc:  # e.g. MemoryError: still one line, from ready()
            self._encoder_error = ExportError(f"the OpenVINO export in {self.export_dir} could not be loaded: "
                                              f"{self._encoder_file}: {type(exc).__name__}: {exc}")

    def wait(self) -> None:
        """Wait until the encoder's compilation has ended, however it ended."""
        self._encoder_thread.join()

    def ready(self) -> None:
        """Wait until the encoder is compiled (at once when it is); raise its ExportError if it could not be."""
        if self._encode_request is None:
            self.wait()
            if self._encoder_error is not None:
                raise self._encoder_error

    def encode(self, image: np.ndarray) -> np.ndarray:
        """(1, 3, 256, 256) float32 -> (1, 256, 64, 64) float32 embedding (a copy: the request reuses memory)."""
        if self._encode_request is None:
            with stage("startup"):  # the encoder was still compiling (nobody called ready())
                self.ready()
        self.encoder_passes += 1
        with stage("encoder"):
            return self._encode_request.infer([image])[0].copy()

    def _encoder_streams(self) -> list:
        """Requests of the encoder on two streams sharing its threads (``streams_config``; compiled on first use,
        about 0.2 s from the model cache); [] with one thread, and for ``mixed``'s two-part encoder (pairs pay only on
        the Zen 4, where mixed was never measured)."""
        if self.precision == "mixed":
            return []
        if self._encode_streams is None:
            if self._encode_request is None:
                with stage("startup"):
                    self.ready()
            threads = int(self._encode_request.get_compiled_model().get_property("INFERENCE_NUM_THREADS"))
            with stage("encoder"):
                self._encode_streams = self._stream_requests(self._encoder_file, threads, self._encoder_model)
        return self._encode_streams

    def encode_pair(self, first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Two (1, 3, 256, 256) inputs -> their embeddings as ``encode`` gives them (bit for bit), encoded side by
        side on the encoder's two streams; in turn where the engine has one thread."""
        requests = self._encoder_streams()
        if not requests:
            return self.encode(first), self.encode(second)
        self.encoder_passes += 2
        with stage("encoder"):
            for request, image in zip(requests, (first, second)):
                request.set_input_tensor(ov.Tensor(np.ascontiguousarray(image, np.float32)))
                request.start_async()
            for request in requests:
                request.wait()
            return requests[0].get_output_tensor(0).data.copy(), requests[1].get_output_tensor(0).data.copy()

    def logits(self, embedding: np.ndarray, boxes_256: np.ndarray) -> np.ndarray:
        """(N, 4) boxes at 256 -> (N, 256, 256) low-res logits (``BoxDecoder.logits``)."""
        return self._boxes.logits(embedding, boxes_256)

    def compile_prompt_decoder(self) -> None:
        """Compile the point-prompt decoder now (``check`` and ``serve`` do; ``predict`` never needs it)."""
        if self._prompt_request is None:
            self._prompt_request = self._compile(MODEL_FILES["decoder_prompts"])

    def prompt_logits(self, embedding: np.ndarray, coords_256: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K, 2) points at 256 with SAM labels (K,) -> logits of the four mask tokens (4, 256, 256), IoU (4,)."""
        self.compile_prompt_decoder()
        with stage("decoder"):
            request = self._prompt_request
            for i, tensor in enumerate(self._boxes.prepared(embedding)):
                request.set_input_tensor(i, tensor)
            n = len(DECODER_IMAGE_OUTPUTS)
            request.set_input_tensor(n, ov.Tensor(np.ascontiguousarray(coords_256, np.float32).reshape(1, -1, 2)))
            request.set_input_tensor(n + 1, ov.Tensor(np.ascontiguousarray(labels, np.float32).reshape(1, -1)))
            request.infer()
            return request.get_output_tensor(0).data[0].copy(), request.get_output_tensor(1).data[0].copy()

    def masks(
        self, embedding: np.ndarray, boxes_256: np.ndarray, resized: tuple[int, int], original: tuple[int, int]
    ) -> Iterator[np.ndarray]:
        """Boolean (H, W) masks in box order; only the part that can be foreground is upsampled."""
        return self._boxes.masks(embedding, boxes_256, resized, original)
