"""``medsam-lite``: the command line. One click group (``common.main``); one module per command, each parsing its
options, calling one library function and reporting; libraries are imported inside the command bodies."""
from __future__ import annotations

import os
import sys

# numpy and OpenCV each load an OpenBLAS whose thread pool spins on every core for ~0.1 s after it starts,
# while the encoder compiles; medsam-lite's numpy/OpenCV work needs no BLAS threads (inference is OpenVINO's
# or torch's own). Set before numpy is imported; a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import click  # noqa: E402

from medsam_lite.cli import check, convert, evaluate, export, finetune, predict, segment, serve, weights  # noqa: E402,F401
from medsam_lite.cli.common import main  # noqa: E402

__all__ = ["entry", "main"]


def entry() -> None:
    """The console script: ``main``, then the process ends at once (``os._exit``) instead of tearing down the
    interpreter and OpenVINO (measured: 0.04-0.05 s less per run). Every output is written, closed and renamed
    by then; only standard output and error are flushed first."""
    code: int | str | None = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):  # click and sys.exit("message") print nothing themselves for a string code
        click.echo(code, err=True)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
