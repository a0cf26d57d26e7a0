"""Loading the official checkpoint layout, wrapped training checkpoints, and refusing anything else."""
from __future__ import annotations

import pytest
import torch

from medsam_lite.engines.checkpoint import CheckpointError, load_model, resolve_checkpoint
from medsam_lite.modeling import build_lite_medsam


@pytest.mark.parametrize("which", ["seeded", "demo", "random"])
def test_official_layout_loads_strictly(checkpoint_path, which):
    model, notes = load_model(checkpoint_path(which))
    assert notes == []
    raw = torch.load(checkpoint_path(which), map_location="cpu", weights_only=True)
    assert len(raw) == 435
    assert sum(v.numel() for v in raw.values()) == 9_801_439
    for key, value in model.state_dict().items():
        assert torch.equal(value, raw[key]), key
    assert not model.training


def test_wrapped_training_checkpoint_is_unwrapped(checkpoint_path, tmp_path):
    raw = torch.load(checkpoint_path("seeded"), map_location="cpu", weights_only=True)
    wrapped = {"model": {f"module.{k}": v for k, v in raw.items()}, "epoch": 3, "optimizer": {"lr": 1e-4}}
    path = tmp_path / "train.pth"
    torch.save(wrapped, path)
    model, notes = load_model(path)
    assert any("'model'" in n and "epoch" in n for n in notes)
    assert any("module." in n for n in notes)
    assert torch.equal(model.state_dict()["mask_decoder.iou_token.weight"], raw["mask_decoder.iou_token.weight"])


def test_wrong_keys_are_named(checkpoint_path, tmp_path):
    raw = torch.load(checkpoint_path("seeded"), map_location="cpu", weights_only=True)
    raw.pop("mask_decoder.iou_token.weight")
    raw["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=r"missing key\(s\): mask_decoder.iou_token.weight.*unexpected key\(s\): extra.weight"):
        load_model(path)


def test_wrong_shape_and_non_checkpoint_refused(tmp_path):
    state = build_lite_medsam().state_dict()
    state["mask_decoder.iou_token.weight"] = torch.zeros(2, 256)
    path = tmp_path / "shape.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="wrong shape.*iou_token"):
        load_model(path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_model(junk)


def test_missing_checkpoint_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDSAM_LITE_CHECKPOINT", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint(None)
    message = str(info.value)
    assert "work_dir/LiteMedSAM/lite_medsam.pth" in message and "bowang-lab/MedSAM" in message
    monkeypatch.setenv("MEDSAM_LITE_CHECKPOINT", str(tmp_path / "from_env.pth"))
    with pytest.raises(CheckpointError, match="from_env.pth"):
        resolve_checkpoint(None)
