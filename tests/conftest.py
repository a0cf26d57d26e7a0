"""Shared fixtures.

Two kinds of checkpoint:
- ``seeded`` / ``seeded_other``: LiteMedSAM's own random initialisation under a fixed seed, saved in the
  official ``lite_medsam.pth`` layout in this test session. They need nothing outside the project.
- ``official`` (the real LiteMedSAM weights), ``demo`` / ``random`` (stand-ins): the checkpoints of the shared
  fixtures (``../shared`` beside the project root, or ``$MEDSAM_LITE_FIXTURES``), which come with the official
  script's outputs on real cases (``reference_official``, ``reference``, ``reference_random``).

Tests that need the shared fixtures call ``shared_path``: where the fixtures are absent they are skipped with
one reason, unless ``$MEDSAM_LITE_REQUIRE_FIXTURES=1`` (CI), which turns that skip into a failure.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES_ENV = "MEDSAM_LITE_FIXTURES"
REQUIRE_ENV = "MEDSAM_LITE_REQUIRE_FIXTURES"
FIXTURES = Path(os.environ.get(FIXTURES_ENV) or ROOT.parent / "shared")
SKIP_REASON = (
    f"needs the shared fixtures (official-layout checkpoints, real cases, the official script's outputs), "
    f"not found at {FIXTURES}; set ${FIXTURES_ENV} to their folder"
)

SHARED_CHECKPOINTS = {"official": "lite_medsam.pth", "demo": "lite_medsam_demo.pth", "random": "lite_medsam_random.pth"}
SEEDED_CHECKPOINTS = {"seeded": 2024, "seeded_other": 7}  # name -> torch seed
REFERENCES = {"official": "reference_official", "demo": "reference", "random": "reference_random"}
T = TypeVar("T")


def fixtures_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def shared_path(*parts: str) -> Path:
    """A path inside the shared fixtures. Skips the test (fails it under ``$MEDSAM_LITE_REQUIRE_FIXTURES``)
    when the fixtures are absent; fails it when they are there but this file is not."""
    if not FIXTURES.is_dir():
        if fixtures_required():
            pytest.fail(f"{REQUIRE_ENV} is set but {SKIP_REASON}", pytrace=False)
        pytest.skip(SKIP_REASON)
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"the shared fixtures at {FIXTURES} lack {path.relative_to(FIXTURES)}", pytrace=False)
    return path


def make_seeded_checkpoint(path: Path, seed: int) -> Path:
    """LiteMedSAM's own initialisation under ``torch.manual_seed(seed)``, saved as a plain state dict (the
    official layout: 435 tensors, 9,801,439 parameters)."""
    import torch

    from medsam_lite.modeling import build_lite_medsam

    torch.manual_seed(seed)
    torch.save(build_lite_medsam().state_dict(), path)
    return path


def once_per_checkpoint(make: Callable[[str], T]) -> Callable[[str], T]:
    """``get(which)``: ``make(which)`` the first time, the same object afterwards."""
    made: dict[str, T] = {}

    def get(which: str) -> T:
        if which not in made:
            made[which] = make(which)
        return made[which]

    return get


@pytest.fixture(scope="session")
def checkpoint_path(tmp_path_factory):
    """``checkpoint_path(which)``: a seeded checkpoint made here, or a shared one (see module docstring)."""

    def make(which: str) -> Path:
        if which in SHARED_CHECKPOINTS:
            return shared_path("checkpoints", SHARED_CHECKPOINTS[which])
        folder = tmp_path_factory.mktemp(f"checkpoint-{which}")
        return make_seeded_checkpoint(folder / f"lite_medsam_{which}.pth", SEEDED_CHECKPOINTS[which])

    return once_per_checkpoint(make)


@pytest.fixture(scope="session")
def torch_engines(checkpoint_path):
    from medsam_lite.engines.torch_engine import TorchEngine

    return once_per_checkpoint(lambda which: TorchEngine(checkpoint_path(which)))


@pytest.fixture(scope="session")
def exports(tmp_path_factory, checkpoint_path):
    """``exports(which)``: an OpenVINO export of that checkpoint, made once per session (about 15 s)."""
    from medsam_lite.engines.export import export_openvino

    def make(which: str) -> Path:
        out = tmp_path_factory.mktemp(f"export-{which}")
        report = export_openvino(checkpoint_path(which), out)
        assert report.encoder_max_abs_diff < 1e-4 and report.decoder_max_abs_diff < 1e-3
        return out

    return once_per_checkpoint(make)


@pytest.fixture(scope="session")
def ov_engines(exports):
    from medsam_lite.engines.openvino_engine import OpenVINOEngine

    return once_per_checkpoint(lambda which: OpenVINOEngine(exports(which)))


def load_reference(which: str, case: str) -> np.ndarray:
    return np.load(shared_path(REFERENCES[which], "segs", case))["segs"]


def op_count(model, kind: str) -> int:
    """How many operations of type ``kind`` (``"MatMul"``, ``"VariadicSplit"``, ...) an OpenVINO model holds."""
    return sum(op.get_type_name() == kind for op in model.get_ops())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(*options: str):
    """A `medsam-lite serve` on 127.0.0.1 (a process of its own) with these options -> (its URL, the process);
    fails the test with the server's last words if it does not answer /healthz within 180 s (a fresh environment's
    first start compiles every module's bytecode)."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "medsam_lite", "serve", "--port", str(port), *options],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2)
            return url, process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the server did not start: {process.stderr.read()[-2000:]}")
            time.sleep(0.25)


def stop_serve(process) -> None:
    """Terminate a server from ``start_serve``; kill it if a job on its worker keeps it past 10 s."""
    import subprocess

    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def shared_case(name: str) -> Path:
    """A real case by file name, from ``cases/imgs`` or ``cases_mm/imgs``."""
    for folder in ("cases", "cases_mm"):
        if (FIXTURES / folder / "imgs" / name).is_file():
            return shared_path(folder, "imgs", name)
    return shared_path("cases", "imgs", name)  # absent: skipped or failed with the reason


@pytest.fixture(autouse=True)
def no_default_export(tmp_path_factory, monkeypatch):
    """Tests choose their engine explicitly: a developer's own work_dir/openvino export must not be picked, nor
    the weights and exports of their per-user cache; and nothing is fetched unless a test asks for it."""
    monkeypatch.setenv("MEDSAM_LITE_EXPORT_DIR", str(tmp_path_factory.getbasetemp() / "no-default-export"))
    monkeypatch.setenv("MEDSAM_LITE_HOME", str(tmp_path_factory.getbasetemp() / "medsam-lite-home"))
    monkeypatch.setenv("MEDSAM_LITE_OFFLINE", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes long (the shared cases through the service, napari under Xvfb); run in CI")
