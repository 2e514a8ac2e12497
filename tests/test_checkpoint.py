import argparse
import pathlib

import pytest
import torch

from mae_course import build_model, load_checkpoint, load_model, load_weights
from mae_course.checkpoint import atomic_save
from mae_course.errors import CheckpointError


def official_style_state_dict(model, official_keys):
    """A state_dict built from the official key list, independent of the course's module tree."""
    own = model.state_dict()
    keys = official_keys(len(model.blocks), len(model.decoder_blocks))
    return {k: torch.randn_like(own[k]) for k in keys}


def test_official_layout_loads_strictly_with_namespace_args(tmp_path, tiny_model, official_keys):
    model = tiny_model()
    sd = official_style_state_dict(model, official_keys)
    path = tmp_path / "official.pth"
    torch.save({"model": sd, "epoch": 799, "args": argparse.Namespace(norm_pix_loss=True, mask_ratio=0.75)}, path)
    ckpt = load_checkpoint(path)
    assert ckpt["args"].mask_ratio == 0.75
    load_weights(model, ckpt["model"], strict=True)
    assert torch.equal(model.blocks[1].mlp.fc2.weight, sd["blocks.1.mlp.fc2.weight"])
    assert torch.equal(model.decoder_pos_embed, sd["decoder_pos_embed"])


def test_load_model_needs_a_name_for_files_without_config(tmp_path):
    model = build_model("mae_vit_tiny_patch4_32")
    path = tmp_path / "bare.pth"
    torch.save({"model": model.state_dict()}, path)
    with pytest.raises(CheckpointError, match="carries no model config"):
        load_model(path)
    loaded = load_model(path, "mae_vit_tiny_patch4_32")
    assert torch.equal(loaded.cls_token, model.cls_token)


def test_course_checkpoint_round_trip(tmp_path):
    model = build_model("mae_vit_tiny_patch4_32", decoder_depth=1, norm_pix_loss=True)
    path = tmp_path / "m.pth"
    atomic_save({"model": model.state_dict(), "config": {"model": model.config}}, path)
    loaded = load_model(path)
    assert loaded.config == model.config
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )


def test_refuses_pickled_objects(tmp_path, tiny_model):
    path = tmp_path / "module.pth"
    torch.save(tiny_model(), path)  # a whole pickled nn.Module
    with pytest.raises(CheckpointError, match="pickled Python object.*MaskedAutoencoder"):
        load_checkpoint(path)
    other = tmp_path / "path.pth"
    torch.save({"model": {}, "where": pathlib.PurePosixPath("/tmp")}, other)
    with pytest.raises(CheckpointError, match="pickled Python object"):
        load_checkpoint(other)


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        load_checkpoint(text)
    tensor_file = tmp_path / "t.pth"
    torch.save([torch.zeros(1)], tensor_file)
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(tensor_file)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pth")


def test_mismatches_are_named(tiny_model):
    model = tiny_model()
    sd = model.state_dict()
    sd.pop("decoder_pred.bias")
    sd["head.weight"] = torch.zeros(3)
    sd["pos_embed"] = torch.zeros(1, 5, 32)
    with pytest.raises(CheckpointError) as err:
        load_weights(model, sd)
    message = str(err.value)
    assert "missing keys: decoder_pred.bias" in message
    assert "unexpected keys: head.weight" in message
    assert "pos_embed (checkpoint (1, 5, 32), model (1, 17, 32))" in message
    # not strict: missing/unexpected allowed, shapes still checked
    sd["pos_embed"] = model.pos_embed.detach().clone()
    assert load_weights(model, sd, strict=False) == ["decoder_pred.bias"]


def test_encoder_only_file_into_full_model_names_decoder_keys(tiny_model):
    model = tiny_model()
    encoder_only = {k: v for k, v in model.state_dict().items() if not k.startswith(("decoder", "mask_token"))}
    with pytest.raises(
        CheckpointError, match="missing keys: mask_token, decoder_pos_embed, decoder_embed.weight.* and 12 more"
    ):
        load_weights(model, encoder_only)


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    atomic_save({"value": torch.tensor(1)}, path)

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"value": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["value"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # no temp file left behind
