"""What a fresh install gives: the package imports no benchmark-only module, every torch-only step says in one
paragraph what to install where torch is absent, and the constraints pin every direct dependency."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from .conftest import ROOT

DEMO = ROOT / "test_demo"


def _run_python(code: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MEDSAM_LITE_CHECKPOINT": ""}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env)


def test_no_module_of_the_package_imports_matplotlib_or_pandas(tmp_path):
    """Every module of medsam_lite and evaluation imported in a fresh process: the benchmark-only packages
    (matplotlib, pandas) stay out, so `.[test]` need not install them."""
    done = _run_python(
        "import importlib, pkgutil, sys\n"
        "import medsam_lite, evaluation\n"
        "names = [m.name for pkg in (medsam_lite, evaluation) for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.')]\n"
        "names = [n for n in names if not n.endswith('__main__')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names), sorted({'matplotlib', 'pandas'} & set(sys.modules)))\n",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    count, leaked = done.stdout.split(" ", 1)
    assert int(count) >= 20 and leaked.strip() == "[]"


def _cli_without(modules: list[str], args: list[str], cwd) -> subprocess.CompletedProcess:
    """``medsam-lite ARGS`` in a process where ``modules`` cannot be imported (as on a plain `pip install .`)."""
    blocked = ", ".join(repr(m) for m in modules)
    return _run_python(
        f"import sys\nfor name in ({blocked},): sys.modules[name] = None\n"
        f"from medsam_lite.cli import main\nsys.argv = ['medsam-lite', *{[str(a) for a in args]!r}]\nmain()\n",
        cwd,
    )


@pytest.mark.parametrize(
    "blocked, args, needs",
    [
        (["torch", "onnx"], ["export"], "medsam-lite export needs torch and onnx"),
        (["onnx"], ["export"], "medsam-lite export needs onnx, which is not installed"),
        (["torch"], ["predict", "-i", DEMO / "imgs", "-o", "out"], "holds no OpenVINO export, so the torch engine would run"),
        (["torch"], ["predict", "-i", DEMO / "imgs", "-o", "out", "--engine", "torch"], "The torch engine needs torch"),
        (["torch"], ["check"], "holds no OpenVINO export, so the torch engine would run"),
        (["torch"], ["finetune", DEMO, "-o", "out"], "medsam-lite finetune needs torch, which is not installed"),
    ],
)
def test_a_step_that_needs_torch_says_what_to_install(checkpoint_path, tmp_path, blocked, args, needs):
    args = [*args, "--checkpoint", checkpoint_path("seeded")]
    if args[0] == "export":
        args += ["--out", tmp_path / "export"]
    done = _cli_without(blocked, args, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    message = done.stderr.strip()
    assert message.count("\n") == 0 and message.startswith("error: ") and needs in message, message
    assert 'pip install -e ".[torch]"' in message
    assert not (tmp_path / "export").exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _requirement_names(path) -> set[str]:
    lines = path.read_text().splitlines()
    return {re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower().replace("_", "-") for line in lines
            if line.strip() and not line.strip().startswith("#")}


def test_constraints_pin_every_direct_dependency_exactly():
    """requirements/constraints.txt (what CI installs with, and the image is built with) pins each package that
    requirements/*.txt names (setup.py reads those files), with ==, and torch at the CPU build 2.13.0."""
    pins = {}
    for line in (ROOT / "requirements/constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version.strip()), line
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    direct = set()
    for path in (ROOT / "requirements").glob("*.txt"):
        if path.name != "constraints.txt":
            direct |= _requirement_names(path)
    assert {"numpy", "openvino", "torch", "onnx", "pytest", "scipy"} <= direct
    unpinned = sorted(direct - set(pins))
    assert not unpinned, f"not pinned in requirements/constraints.txt: {unpinned}"
    assert pins["torch"].split("+")[0] == "2.13.0"


def test_subpackages_export_their_names_and_import_nothing_heavy(tmp_path):
    """`import medsam_lite.core` (io, pipeline, batch) loads no numpy, OpenCV, OpenVINO or torch; every name a
    subpackage exports resolves to its module's object."""
    done = _run_python(
        "import sys\n"
        "import medsam_lite, medsam_lite.core, medsam_lite.io, medsam_lite.pipeline, medsam_lite.batch, medsam_lite.train\n"
        "print(sorted(m for m in ('numpy', 'cv2', 'openvino', 'torch') if m in sys.modules))\n"
        "from medsam_lite.batch.runner import run_folder\n"
        "from medsam_lite.core.case import Case\n"
        "assert medsam_lite.batch.run_folder is run_folder and medsam_lite.core.Case is Case\n"
        "from medsam_lite.train.config import FinetuneConfig\n"
        "assert medsam_lite.train.FinetuneConfig is FinetuneConfig\n"
        "for pkg in (medsam_lite, medsam_lite.core, medsam_lite.io, medsam_lite.pipeline, medsam_lite.batch):\n"
        "    assert pkg.__all__ and all(getattr(pkg, name) is not None for name in pkg.__all__), pkg\n"
        "print('resolved')\n",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "resolved"]
