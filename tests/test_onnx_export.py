"""export-onnx: the exported graph computes what PyTorch computes, for every ratio and every kind of
masking noise, and bad checkpoints or unsupported models are one-line errors."""

from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from mae_course import build_model, load_model  # noqa: E402
from mae_course.cli import main  # noqa: E402
from mae_course.data.shipped import shipped_checkpoint  # noqa: E402
from mae_course.errors import ConfigError  # noqa: E402
from mae_course.model.masking import grid_mask_noise, mask_noise, num_kept  # noqa: E402
from mae_course.seeing.explorer import normalized_image  # noqa: E402
from mae_course.seeing.onnx_export import (  # noqa: E402
    check_exportable,
    onnx_session,
    require_onnx,
    run_onnx,
)


@pytest.fixture(scope="module")
def shipped():
    return load_model(str(shipped_checkpoint())).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The shipped model, exported by the command line (its default checkpoint)."""
    path = tmp_path_factory.mktemp("onnx") / "shipped.onnx"
    assert main(["export-onnx", "--output", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def session(exported):
    return onnx_session(exported)


@pytest.fixture(scope="module")
def images():
    return torch.cat([normalized_image(f"builtin:{i}", 32) for i in range(6)])


def noise_for(sampling: str, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Noise of each sampler; grid noise exists at 75% only, and is used as it is at the other ratios."""
    if sampling == "grid":
        return grid_mask_noise(6, (8, 8), 0.75, generator)
    return mask_noise(sampling, 6, (8, 8), ratio, generator=generator)


@pytest.mark.parametrize("sampling", ["random", "block", "grid"])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75, 0.9])
def test_onnxruntime_predicts_what_pytorch_predicts(shipped, session, images, ratio, sampling):
    noise = noise_for(sampling, ratio, torch.Generator().manual_seed(int(ratio * 100)))
    with torch.no_grad():
        _, expected, expected_mask = shipped(images, ratio, noise)
    pred, mask = run_onnx(session, images, noise, ratio)
    assert pred.shape == expected.shape == (6, 64, 48)
    assert (pred - expected).abs().max() < 1e-5
    assert torch.equal(mask, expected_mask)
    assert (mask == 0).sum(1).tolist() == [num_kept(64, ratio)] * 6


def test_ties_in_the_noise_keep_the_lower_index_in_both(shipped, session, images):
    """Noise with many equal values: PyTorch's stable sort and ONNX's TopK choose the same patches."""
    noise = torch.randint(0, 3, (6, 64), generator=torch.Generator().manual_seed(1)).float()
    with torch.no_grad():
        _, expected, expected_mask = shipped(images, 0.75, noise)
    pred, mask = run_onnx(session, images, noise, 0.75)
    assert torch.equal(mask, expected_mask)
    assert (pred - expected).abs().max() < 1e-5
    for row in range(6):
        by_noise_then_index = sorted(range(64), key=lambda i: (noise[row, i].item(), i))
        assert (mask[row] == 0).nonzero().flatten().tolist() == sorted(by_noise_then_index[:16])


def test_the_batch_size_is_free(shipped, session):
    images = torch.randn(1, 3, 32, 32)
    noise = torch.rand(1, 64)
    pred, _ = run_onnx(session, images, noise, 0.5)
    with torch.no_grad():
        expected = shipped(images, 0.5, noise)[1]
    assert (pred - expected).abs().max() < 1e-5


def test_the_graph_has_the_documented_inputs_and_outputs(exported):
    import json

    import onnx

    graph = onnx.load(str(exported))
    assert [i.name for i in graph.graph.input] == ["images", "noise", "len_keep"]
    assert [o.name for o in graph.graph.output] == ["pred", "mask"]
    config = json.loads({p.key: p.value for p in graph.metadata_props}["mae_course.model"])
    assert config["name"] == "mae_vit_mini_patch4_32" and config["norm_pix_loss"] is False


def test_a_course_checkpoint_exports_too(mini_mae_checkpoint, tmp_path, capsys):
    out = tmp_path / "mini.onnx"
    assert main(["export-onnx", "--checkpoint", str(mini_mae_checkpoint), "--output", str(out)]) == 0
    assert out.is_file()
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {out}") and "onnxruntime's predictions are PyTorch's to" in line


def test_a_bad_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not a checkpoint")
    assert main(["export-onnx", "--checkpoint", str(bad), "--output", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mae_course export-onnx: error: cannot export {bad}:") and "\n" not in err
    assert not (tmp_path / "x.onnx").exists()


def test_a_released_file_without_config_asks_for_the_architecture(tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / "released.pth"
    torch.save({"model": build_model("mae_vit_mini_patch4_32").state_dict()}, path)
    assert main(["export-onnx", "--checkpoint", str(path), "--output", str(tmp_path / "x.onnx")]) == 2
    assert "carries no model config" in capsys.readouterr().err


def test_an_unsupported_model_is_one_line(tmp_path, capsys):
    from mae_course.checkpoint import atomic_save

    model = build_model("mae_vit_mini_patch4_32", mask_token_in_encoder=True)
    path = tmp_path / "baseline.pth"
    atomic_save({"model": model.state_dict(), "config": {"model": model.config}}, path)
    assert main(["export-onnx", "--checkpoint", str(path), "--output", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "mask-token-in-encoder baseline" in err and err.count("\n") == 1
    with pytest.raises(ConfigError, match="only a MaskedAutoencoder"):
        check_exportable(torch.nn.Linear(2, 2))


def test_the_output_must_be_an_onnx_file(capsys):
    assert main(["export-onnx", "--output", "model.safetensors"]) == 2
    assert "must be an .onnx file" in capsys.readouterr().err


def test_without_the_extra_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # an import of it now fails
    with pytest.raises(ConfigError, match=r'pip install "mae_course\[onnx\]"'):
        require_onnx()
