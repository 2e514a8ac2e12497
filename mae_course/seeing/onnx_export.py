"""Lesson 06: the MAE as an ONNX graph, to run it wherever ONNX Runtime runs, a web page included.

    python -m mae_course export-onnx    # the shipped mini MAE -> runs/onnx/mae_vit_mini_builtin32.onnx
    python -m mae_course export-onnx --checkpoint runs/demo/model.safetensors --output demo.onnx

The graph takes the masking noise as an input, so a mask is reproducible and the same as in
PyTorch, and the number of kept patches as another, so one graph serves every masking ratio:

    images    (N, C, H, W) float32, normalized as for the model
    noise     (N, L) float32: the len_keep patches of smallest noise are kept (ties: the lower index)
    len_keep  () int64: int(L * (1 - mask_ratio)), see :func:`~mae_course.model.masking.num_kept`
    -> pred   (N, L, p*p*C) float32, the prediction of every patch (normalized pixels for a norm-pix model)
    -> mask   (N, L) float32, 1 = removed

It is the model's own code, traced by ``torch.onnx.export`` with the kept count a symbolic size:
:meth:`~mae_course.model.mae.MaskedAutoencoder.encode` and ``forward_decoder`` after
:func:`~mae_course.model.masking.keep_lowest_noise`. The course website's explorer runs this file
in the reader's browser with onnxruntime-web. Needs the ``onnx`` extra (onnx, onnxscript,
onnxruntime): ``pip install "mae_course[onnx]"``.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import option
from ..data.shipped import shipped_checkpoint
from ..errors import CheckpointError, ConfigError
from ..model.mae import MaskedAutoencoder
from ..model.masking import keep_lowest_noise, num_kept
from ..model.registry import load_model
from ..safe_files import atomic_write

INPUTS, OUTPUTS = ("images", "noise", "len_keep"), ("pred", "mask")
_EXTRA = 'ONNX export needs the onnx extra: pip install "mae_course[onnx]" (onnx, onnxscript, onnxruntime)'


@dataclass
class OnnxExportConfig:
    """Settings of ``export-onnx``: which checkpoint, and where the graph goes."""

    checkpoint: str | None = option(
        None, "the course checkpoint to export, .safetensors or .pth (default: the shipped mini MAE)"
    )
    model: str | None = option(None, "the architecture of a checkpoint that carries no config (a released MAE file)")
    output: str | None = option(None, "the .onnx file to write (default: runs/onnx/<checkpoint name>.onnx)")

    def validate(self) -> None:
        if self.output is not None and Path(self.output).suffix != ".onnx":
            raise ConfigError(f"the output must be an .onnx file, got {self.output}")

    def output_path(self) -> Path:
        stem = Path(self.checkpoint).stem if self.checkpoint else shipped_checkpoint().stem
        return Path(self.output) if self.output else Path("runs") / "onnx" / f"{stem}.onnx"


class ExportedMAE(nn.Module):
    """``(images, noise, len_keep) -> (pred, mask)``: the MAE's forward pass with the kept count a tensor."""

    def __init__(self, model: MaskedAutoencoder):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, noise: torch.Tensor, len_keep: torch.Tensor):
        model = self.model
        x = model.patch_embed(images) + model.pos_embed[:, 1:]  # (N, L, D)
        keep = len_keep.item()  # a symbolic size during export
        torch._check(keep >= 1)
        torch._check(keep <= x.shape[1])
        x_visible, mask, ids_restore = keep_lowest_noise(x, noise, keep)
        pred = model.forward_decoder(model.encode(x, x_visible, mask), ids_restore)
        return pred, mask


def check_exportable(model: Any) -> MaskedAutoencoder:
    """``model`` if the export supports it, else a ConfigError that says why."""
    if not isinstance(model, MaskedAutoencoder):
        raise ConfigError(f"only a MaskedAutoencoder exports to ONNX here, not a {type(model).__name__}")
    if model.mask_token_in_encoder:
        raise ConfigError(
            "this model is the mask-token-in-encoder baseline of Table 2, which the ONNX export does "
            "not support: export an MAE whose encoder sees the visible patches only"
        )
    return model


def _stable_sort(self, stable=None, dim: int = -1, descending: bool = False):
    """``aten.sort.stable`` as ONNX TopK, which breaks ties by the lower index, as a stable sort does."""
    from onnxscript import opset18 as op

    size = op.Shape(self, start=dim, end=None if dim == -1 else dim + 1)
    return op.TopK(self, size, axis=dim, largest=descending, sorted=True)


def require_onnx() -> None:
    """Raise a one-line ConfigError when the onnx extra is not installed."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError(_EXTRA) from None


def onnx_bytes(model: MaskedAutoencoder) -> bytes:
    """The ONNX graph of ``model`` (see the module's docstring), serialized; batch size dynamic."""
    require_onnx()
    model = check_exportable(model).eval()
    side = model.patch_embed.img_size
    images = torch.zeros(2, model.patch_embed.proj.in_channels, side, side)
    example = (images, torch.rand(2, model.num_patches), torch.tensor(num_kept(model.num_patches, 0.75)))
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            ExportedMAE(model),
            example,
            dynamo=True,
            verbose=False,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_shapes={"images": {0: batch}, "noise": {0: batch}, "len_keep": None},
            custom_translation_table={torch.ops.aten.sort.stable: _stable_sort},
        )
    onnx_model = program.model_proto
    onnx_model.metadata_props.add(key="mae_course.model", value=json.dumps(model.config, sort_keys=True))
    return onnx_model.SerializeToString()


def export_onnx(model: MaskedAutoencoder, path: str | Path) -> Path:
    """Write ``model`` as ONNX to ``path`` (atomically); returns the path."""
    data = onnx_bytes(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(data))
    return path


def load_for_export(checkpoint: str | None = None, model: str | None = None) -> MaskedAutoencoder:
    """The model of a course checkpoint (default: the shipped one), with errors in one line."""
    path = checkpoint or str(shipped_checkpoint())
    try:
        loaded = load_model(path, model)
    except CheckpointError as e:
        raise CheckpointError(f"cannot export {path}: {e}") from None
    return check_exportable(loaded)


def run_onnx(session: Any, images: torch.Tensor, noise: torch.Tensor, mask_ratio: float):
    """Run an onnxruntime ``InferenceSession`` of the exported graph: ``(pred, mask)`` as tensors."""
    feed = {
        "images": images.float().numpy(),
        "noise": noise.float().numpy(),
        "len_keep": torch.tensor(num_kept(noise.shape[1], mask_ratio)).numpy(),
    }
    pred, mask = session.run(list(OUTPUTS), feed)
    return torch.from_numpy(pred), torch.from_numpy(mask)


def onnx_session(path: str | Path) -> Any:
    """An onnxruntime session of an exported file, on the CPU."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(_EXTRA) from None
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@torch.no_grad()
def largest_difference(model: MaskedAutoencoder, session: Any, mask_ratio: float = 0.75, seed: int = 0) -> float:
    """The largest absolute difference between PyTorch's and ONNX Runtime's predictions on a random batch
    (and a ValueError if their masks differ at all)."""
    generator = torch.Generator().manual_seed(seed)
    side = model.patch_embed.img_size
    images = torch.randn(4, model.patch_embed.proj.in_channels, side, side, generator=generator)
    noise = torch.rand(4, model.num_patches, generator=generator)
    _, expected, expected_mask = model.eval()(images, mask_ratio, noise)
    pred, mask = run_onnx(session, images, noise, mask_ratio)
    if not torch.equal(mask, expected_mask):
        raise ValueError("the exported graph masks other patches than PyTorch does")
    return float((pred - expected).abs().max())
