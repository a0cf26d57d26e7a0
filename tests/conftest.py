"""Shared fixtures. Test data lives in ../shared beside the project root and is never copied here;
tests that need it fail (never skip) when it is missing."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDSAM_LITE_SHARED", ROOT.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path inside ../shared; fails the test loudly when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"test data missing: {path} (../shared must sit beside the project root)", pytrace=False)
    return path


CHECKPOINTS = {"demo": "lite_medsam_demo.pth", "random": "lite_medsam_random.pth"}
REFERENCES = {"demo": "reference", "random": "reference_random"}


@pytest.fixture(scope="session")
def checkpoint_path():
    return lambda which: shared_path("checkpoints", CHECKPOINTS[which])


@pytest.fixture(scope="session")
def torch_engines(checkpoint_path):
    from medsam_lite.engines.torch_engine import TorchEngine

    cache: dict[str, TorchEngine] = {}

    def get(which: str) -> TorchEngine:
        if which not in cache:
            cache[which] = TorchEngine(checkpoint_path(which))
        return cache[which]

    return get


def load_reference(which: str, case: str) -> np.ndarray:
    return np.load(shared_path(REFERENCES[which], "segs", case))["segs"]


@pytest.fixture(autouse=True)
def no_default_export(tmp_path_factory, monkeypatch):
    """Tests choose their engine explicitly: a developer's own work_dir/openvino export must not be picked."""
    monkeypatch.setenv("MEDSAM_LITE_EXPORT_DIR", str(tmp_path_factory.getbasetemp() / "no-default-export"))
