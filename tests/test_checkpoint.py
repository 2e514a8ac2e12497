import argparse
import json
import pathlib
import re

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

from mae_course import build_model, load_checkpoint, load_model, load_weights
from mae_course.checkpoint import atomic_save, save_weights
from mae_course.errors import CheckpointError
from tests.conftest import key_words


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
    assert re.search(key_words("pos_embed", "(1, 5, 32)", "(1, 17, 32)"), message)
    # not strict: missing/unexpected allowed, shapes still checked
    sd["pos_embed"] = model.pos_embed.detach().clone()
    assert load_weights(model, sd, strict=False) == ["decoder_pred.bias"]


def test_encoder_only_file_into_full_model_names_decoder_keys(tiny_model):
    model = tiny_model()
    encoder_only = {k: v for k, v in model.state_dict().items() if not k.startswith(("decoder", "mask_token"))}
    with pytest.raises(
        CheckpointError, match=key_words("missing", "mask_token, decoder_pos_embed, decoder_embed.weight", "12 more")
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


def test_save_weights_round_trip_keeps_tensors_dtypes_and_config(tmp_path):
    model = build_model("mae_vit_tiny_patch4_32", decoder_depth=1)
    sd = model.state_dict()
    sd["blocks.0.norm1.weight"] = sd["blocks.0.norm1.weight"].half()  # a float16 tensor stays float16
    sd["counter"] = torch.arange(5)  # an integer tensor stays int64
    sd["transposed"] = torch.randn(3, 4).t()  # not contiguous: saved as its values
    config = {"model": model.config, "note": "round trip"}
    path = tmp_path / "m.safetensors"
    save_weights(sd, config, path)
    ckpt = load_checkpoint(path)
    assert ckpt["config"] == config
    assert set(ckpt["model"]) == set(sd)
    for name, tensor in sd.items():
        assert ckpt["model"][name].dtype == tensor.dtype and torch.equal(ckpt["model"][name], tensor), name
    # a valid safetensors file, self-contained: the config is in its header; and a JSON config beside it
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(sd) and json.loads(f.metadata()["config"]) == config
    assert json.loads((tmp_path / "m.json").read_text())["config"] == config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]  # no temporary left
    loaded = load_model(path, strict=False)
    assert loaded.config == model.config and torch.equal(loaded.cls_token, model.cls_token)


def test_save_weights_without_json_beside(tmp_path):
    save_weights({"w": torch.ones(2)}, {"model": {}}, tmp_path / "model.safetensors", config_json=False)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    assert load_checkpoint(tmp_path / "model.safetensors")["config"] == {"model": {}}


def test_safetensors_without_config_in_header_reads_the_json_beside_it(tmp_path):
    weights = {"w": torch.ones(2)}
    safetensors.torch.save_file(weights, tmp_path / "shipped.safetensors")  # another tool's file: no metadata
    assert "config" not in load_checkpoint(tmp_path / "shipped.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"model": {"depth": 1}, "git_commit": "abc"}))  # a run's folder
    assert load_checkpoint(tmp_path / "shipped.safetensors")["config"]["model"] == {"depth": 1}
    (tmp_path / "shipped.json").write_text(json.dumps({"command": "pretrain", "config": {"model": {"depth": 2}}}))
    assert load_checkpoint(tmp_path / "shipped.safetensors")["config"] == {"model": {"depth": 2}}


def test_a_safetensors_file_is_recognised_by_its_content(tmp_path):
    path = tmp_path / "weights.pth"  # misnamed
    save_weights({"w": torch.ones(2)}, {"model": {}}, path, config_json=False)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[: len(data) // 2], "is not a safetensors file"),  # truncated: a copy cut short
        (lambda data: b"\x00" * 16, "is not a safetensors file"),
        (lambda data: b"", "is not a safetensors file"),
    ],
)
def test_a_broken_safetensors_file_is_one_checkpoint_error(tmp_path, damage, message):
    path = tmp_path / "model.safetensors"
    save_weights({"w": torch.ones(100)}, {"model": {}}, path, config_json=False)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_a_safetensors_config_that_is_not_json_is_one_checkpoint_error(tmp_path):
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file({"w": torch.ones(2)}, path, metadata={"config": "{'model': oops"})
    with pytest.raises(CheckpointError, match="config in its header is not JSON") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_a_broken_safetensors_checkpoint_is_one_line_on_the_command_line(tmp_path, capsys):
    from mae_course.cli import main

    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    assert main(["linprobe", "--checkpoint", str(path), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "\r" not in line]
    assert len(lines) == 1 and "is not a safetensors file" in lines[0] and "Traceback" not in err, err


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.float8_e4m3fn, torch.complex64])
def test_weights_of_another_kind_of_number_are_refused_not_cast(tiny_model, dtype):
    """bool, integer, fp8 or complex tensors were cast silently into the float32 model."""
    model = tiny_model()
    sd = model.state_dict()
    weight = sd["blocks.0.mlp.fc1.weight"]
    sd["blocks.0.mlp.fc1.weight"] = weight.to(dtype)
    with pytest.raises(
        CheckpointError,
        match=key_words("dtype", "blocks.0.mlp.fc1.weight", str(dtype), "torch.float32"),
    ):
        load_weights(model, sd)
    for fine in (torch.float16, torch.bfloat16, torch.float64):
        load_weights(model, {**sd, "blocks.0.mlp.fc1.weight": weight.to(fine)})


def test_damaged_bytes_inside_a_pth_file_are_found_before_it_is_loaded(tmp_path):
    """torch.load does not check the zip's CRC-32s: damaged tensor bytes loaded as NaN or garbage weights."""
    path = tmp_path / "checkpoint-last.pth"
    weights = torch.arange(4096, dtype=torch.float32)
    atomic_save({"model": {"w": weights}, "epoch": 3}, path)
    data = bytearray(path.read_bytes())
    at = data.find(weights.numpy().tobytes()[:256])
    data[at + 1000 : at + 1004] = b"\xff\xff\xff\xff"  # a NaN, where the tensor's bytes are
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=r"is damaged: its part \S+/data/0 does not match its CRC-32") as error:
        load_checkpoint(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_pth_file_written_without_crc32s_still_loads(tmp_path):
    """torch.serialization.set_crc32_options(False) writes zeros for the CRC-32s: nothing to check."""
    torch.serialization.set_crc32_options(False)
    try:
        atomic_save({"model": {"w": torch.ones(3)}}, tmp_path / "no_crc.pth")
    finally:
        torch.serialization.set_crc32_options(True)
    assert torch.equal(load_checkpoint(tmp_path / "no_crc.pth")["model"]["w"], torch.ones(3))


def test_damaged_tensor_bytes_in_a_safetensors_file_are_found(tmp_path):
    """A damaged model.safetensors loaded NaN weights: its tensors now carry a checksum in the header."""
    path = tmp_path / "model.safetensors"
    save_weights({"w": torch.ones(1000), "b": torch.zeros(3)}, {"model": {}}, path, config_json=False)
    with safe_open(str(path), framework="pt") as f:
        assert len(f.metadata()["tensors_sha256"]) == 64
    data = bytearray(path.read_bytes())
    data[-100:-96] = b"\xff\xff\xff\xff"  # inside the tensor data: a NaN
    path.write_bytes(data)
    with pytest.raises(
        CheckpointError, match="is damaged: its tensors do not match the checksum in its header"
    ) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_safetensors_files_without_a_checksum_load_as_before(tmp_path):
    """Files written before the checksum, or by other tools, have none: they load unchecked."""
    shipped = sorted((pathlib.Path(__file__).resolve().parents[1] / "data" / "checkpoints").glob("*.safetensors"))
    assert shipped
    for path in shipped:
        with safe_open(str(path), framework="pt") as f:
            assert "tensors_sha256" not in (f.metadata() or {})
        assert load_model(path).config["name"] == "mae_vit_mini_patch4_32"
    safetensors.torch.save_file({"w": torch.ones(2)}, tmp_path / "other.safetensors")
    assert torch.equal(load_checkpoint(tmp_path / "other.safetensors")["model"]["w"], torch.ones(2))
