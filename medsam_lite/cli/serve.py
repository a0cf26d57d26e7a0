"""``medsam-lite serve``: the HTTP service (``serve``)."""
from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import time
from pathlib import Path

import click

from medsam_lite.cli.common import (
    CHECKPOINT_OPTION, ENGINE_OPTION, EXPORT_DIR_OPTION, OFFLINE_OPTION, PRECISION_OPTION, compile_prompt_decoder,
    ct_window, engine_ready, fail, load_engine, main, stopped_how, window_options
)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback by default; another address without a token is warned about).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@CHECKPOINT_OPTION
@ENGINE_OPTION
@EXPORT_DIR_OPTION
@PRECISION_OPTION
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for inference.")
@click.option("--cache-mb", type=click.IntRange(min=0), default=512, show_default=True,
              help="Slice embeddings kept (4 MiB each), least recently used out.")
@click.option("--store-mb", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Uploaded images kept on disk, least recently used out.")
@click.option("--store-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where uploads are kept [default: a temporary folder, removed at exit].")
@click.option("--max-upload-mb", type=click.IntRange(min=1), default=512, show_default=True,
              help="Larger request bodies are refused with 413 before they are read.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=1 << 30, show_default=True,
              help="Pixels (voxels) an uploaded image may have, checked from its header before decoding.")
@click.option("--queue", "queue_size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Inference jobs that may wait; more are answered 503 with Retry-After.")
@click.option("--token", default=None, envvar="MEDSAM_LITE_TOKEN",
              help="Every endpoint but /healthz needs 'Authorization: Bearer TOKEN' [env: MEDSAM_LITE_TOKEN].")
@click.option("--cors-origin", "cors_origins", multiple=True, help="Allow browser pages of this origin (repeatable).")
@click.option("--modality", type=click.Choice(["CT", "MR", "other", "raw"]), default=None,
              help="Intensity rule for viewer images (nnInteractive, MONAI Label) whose metadata names none, as "
                   "segment's. [default: uint8 as it is, other values by the 0.5-99.5 percentile rule]")
@window_options
@click.option("--reach", type=click.IntRange(min=0), default=40, show_default=True,
              help="Slices a box drawn on one slice (nnInteractive, MONAI Label) may propagate each way, until its "
                   "mask vanishes (each new slice is one encoder pass: 40 keeps a first box within the viewers' 60 s "
                   "timeout on a 2-core CPU).")
@click.option("--max-sessions", type=click.IntRange(min=1), default=4, show_default=True,
              help="nnInteractive sessions (viewers) held at once; one more is answered 503.")
@click.option("--session-timeout", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Seconds an nnInteractive session may stay idle before it is reaped (410 afterwards).")
@click.option("--shutdown-grace", type=click.FloatRange(min=0), default=5, show_default=True,
              help="Seconds a SIGTERM or Ctrl+C gives the requests under way before the server stops; a longer job "
                   "(a propagation) is cut and answered 503 (docker stop waits 10 s before its SIGKILL).")
@OFFLINE_OPTION
def serve(host: str, port: int, checkpoint: Path | None, engine: str, export_dir: Path | None, precision: str,
          threads: int | None, cache_mb: int, store_mb: int, store_dir: Path | None, max_upload_mb: int,
          max_pixels: int, queue_size: int, token: str | None, cors_origins: tuple[str, ...], modality: str | None,
          window: str | None, window_level: float | None, window_width: float | None, reach: int | None,
          max_sessions: int, session_timeout: float, shutdown_grace: float, offline: bool) -> None:
    """An HTTP service: the native API (/v1, documented at /docs), samapi's (/sam/, QuPath's SAM extension),
    FastMedSAM's (/upload/, /segment/), nnInteractive's (/nninteractive: 3D Slicer, napari) and MONAI Label's
    (/monailabel: 3D Slicer), with an embedding cache."""
    from medsam_lite.core.optional import missing

    absent = missing("fastapi", "uvicorn", "multipart")
    if absent:
        fail(f"serve needs {', '.join(absent)}, which {'is' if len(absent) == 1 else 'are'} not installed here: "
              f"pip install -e . (they are among medsam-lite's dependencies)")
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(max_pixels))
    from medsam_lite.serve.settings import ServeSettings

    settings = ServeSettings(host, port, cache_mb, store_mb, max_upload_mb, max_pixels, queue_size, token or None,
                             list(cors_origins), store_dir, modality, ct_window(window, window_level, window_width),
                             reach, max_sessions, session_timeout)
    if not settings.loopback and not settings.token:
        click.echo(f"WARNING: listening on {host} without a token: anyone who can reach this address can use the "
                   f"service; set --token or $MEDSAM_LITE_TOKEN", err=True)
    if store_dir is not None:  # said at once too, not in a traceback once the engine has loaded
        from medsam_lite.core.atomic import unwritable

        if why := unwritable(store_dir):
            fail(f"the store folder {store_dir} cannot keep uploads: {why}")
    listening = _listen(host, port)  # before the engine loads: a port in use is said at once
    start = time.perf_counter()
    choice = load_engine(engine, checkpoint, export_dir, precision, threads, background=True, offline=offline)
    compile_prompt_decoder(choice.engine)
    engine_ready(choice)
    from medsam_lite.serve.app import create_app
    from medsam_lite.serve.service import Service

    service = Service.start(settings, choice, choice.checkpoint_sha256)
    click.echo(f"{choice.description} ready in {time.perf_counter() - start:.2f} s; serving on http://{host}:{port}/ "
               f"(API docs at /docs)", err=True)
    try:
        _server(create_app(service), host, port, shutdown_grace, service).run([listening])
    except KeyboardInterrupt as exc:  # uvicorn raises the signal again once it has stopped
        click.echo("stopped", err=True)
        sys.exit(stopped_how(exc)[1])
    finally:  # also when uvicorn stops before the application starts (the store's folder is removed)
        service.close()
        listening.close()


def _server(app, host: str, port: int, grace: float, service):
    """uvicorn's server for ``app``, which says when a signal stops it, marks ``service`` as stopping (new
    requests get 503) and cuts what still runs after ``grace`` seconds (uvicorn alone waits for every request, a
    60 s propagation included, past docker stop's SIGKILL)."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame) -> None:
            service.stopping = True
            if not self.should_exit:
                click.echo(f"stopping ({signal.Signals(sig).name}): the requests under way get up to {grace:g} s",
                           err=True)
            super().handle_exit(sig, frame)

    return Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=grace))


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), as uvicorn would bind it; one line and exit 2 when it cannot be (uvicorn
    would say so only after the engine had loaded, below a line that said it was serving)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = " (another server is there: stop it or choose another --port)" if exc.errno == errno.EADDRINUSE else ""
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}")
    return sock
