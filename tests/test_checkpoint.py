"""Loading the official checkpoint layout, wrapped training checkpoints, and refusing anything else."""
from __future__ import annotations

import argparse
from fractions import Fraction

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
    with pytest.raises(CheckpointError, match="junk.pth is not a PyTorch checkpoint: it starts with b'not '"):
        load_model(junk)


def test_unreadable_checkpoints_say_what_is_in_the_way_without_torchs_advice(checkpoint_path, tmp_path):
    raw = torch.load(checkpoint_path("seeded"), map_location="cpu", weights_only=True)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(checkpoint_path("seeded").read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="truncated.pth is cut short: a zip archive of 100,000 bytes without its "
                                              r"end \(a download or copy that stopped part-way\); copy or fetch it again$"):
        load_model(truncated)
    with_object = tmp_path / "with_object.pth"
    torch.save({"model": raw, "loss": Fraction(1, 3)}, with_object)  # any class outside the allow-list
    with pytest.raises(CheckpointError) as info:
        load_model(with_object)
    assert "it holds a fractions.Fraction object beside the weights, which weights-only loading refuses" in str(info.value)
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)
    # a training script's arguments beside the weights load (argparse.Namespace is allowed)
    with_args = tmp_path / "with_args.pth"
    torch.save({"model": raw, "args": argparse.Namespace(lr=5e-3, epochs=10)}, with_args)
    model, notes = load_model(with_args)
    assert any("ignored: args" in note for note in notes)
    assert torch.equal(model.state_dict()["mask_decoder.iou_token.weight"], raw["mask_decoder.iou_token.weight"])


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
