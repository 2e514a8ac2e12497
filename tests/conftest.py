import os
import re
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(min(2, torch.get_num_threads()))

# A model small enough to build and run in milliseconds, with the course's real code paths.
TINY = dict(
    img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=4,
    decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0,
)  # fmt: skip


# The same small model as constructor overrides of a registry model (for configs and commands).
TINY_OVERRIDES = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


@pytest.fixture
def tiny_overrides():
    return dict(TINY_OVERRIDES)


@pytest.fixture(scope="session")
def mini_mae_checkpoint(tmp_path_factory):
    """A course checkpoint of the mini MAE (untrained: the tests only need its weights and config)."""
    from mae_course import build_model
    from mae_course.checkpoint import atomic_save

    torch.manual_seed(0)
    model = build_model("mae_vit_mini_patch4_32")
    path = tmp_path_factory.mktemp("ckpt") / "mae.pth"
    atomic_save({"model": model.state_dict(), "config": {"model": model.config}}, path)
    return path


@pytest.fixture
def tiny_model():
    from mae_course import MaskedAutoencoder

    def make(**overrides):
        torch.manual_seed(0)
        return MaskedAutoencoder(**{**TINY, **overrides})

    return make


def _official_keys(depth: int, decoder_depth: int) -> list[str]:
    """The key list of the official MAE state_dict, written from its documented layout."""
    block = [
        "norm1.weight",
        "norm1.bias",
        "attn.qkv.weight",
        "attn.qkv.bias",
        "attn.proj.weight",
        "attn.proj.bias",
        "norm2.weight",
        "norm2.bias",
        "mlp.fc1.weight",
        "mlp.fc1.bias",
        "mlp.fc2.weight",
        "mlp.fc2.bias",
    ]
    keys = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    keys += [f"blocks.{i}.{k}" for i in range(depth) for k in block]
    keys += [
        "norm.weight",
        "norm.bias",
        "decoder_embed.weight",
        "decoder_embed.bias",
        "mask_token",
        "decoder_pos_embed",
    ]
    keys += [f"decoder_blocks.{i}.{k}" for i in range(decoder_depth) for k in block]
    keys += ["decoder_norm.weight", "decoder_norm.bias", "decoder_pred.weight", "decoder_pred.bias"]
    return keys


@pytest.fixture
def official_keys():
    return _official_keys


def recorder(stop_at: int | None = None, how: str = "ctrl-c"):
    """``(losses, on_step)``: on_step records every step's loss; at ``stop_at`` it presses Ctrl-C
    (a real SIGINT to this process: the run stops at the end of the step and saves) or, with
    ``how="kill"``, dies at once without saving (SystemExit), as a killed run would."""
    losses = []

    def on_step(step: int, loss: float) -> None:
        losses.append(loss)
        if step == stop_at:
            if how == "kill":
                raise SystemExit("killed by the test")
            os.kill(os.getpid(), signal.SIGINT)

    return losses, on_step


# ---------------------------------------------------------------------------------------- image folders


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A photo-like RGB picture: smooth colour ramps with a few rectangles (structure that crops,
    flips and JPEG compression all change)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([255 * x / width, 255 * y / height, 128 + 100 * np.sin(x / 23.0 + y / 31.0)], axis=-1)
    for _ in range(4):
        x0, y0 = rng.integers(0, max(1, width // 2)), rng.integers(0, max(1, height // 2))
        rgb[y0 : y0 + height // 4, x0 : x0 + width // 3] = rng.integers(0, 256, 3)
    rgb += rng.normal(0, 6, rgb.shape)  # texture, so that JPEG sizes are not trivial
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


def write_images(root: Path, sizes: dict[str, tuple[int, int]], seed: int = 0, quality: int = 90) -> Path:
    """Write a picture of ``(width, height)`` at ``root/relative`` for each entry (the format
    follows the extension); returns root. The one writer of image files the tests use."""
    for k, (relative, (width, height)) in enumerate(sizes.items()):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        photo(width, height, seed + k).save(path, quality=quality)
    return root


def folder_layout(splits=("train", "val"), classes=("cat", "dog"), per_class=6, size=(40, 30)) -> dict:
    """ImageNet's layout: ``split/class/class_i.jpg`` for each split and class."""
    return {f"{s}/{c}/{c}_{i}.jpg": size for s in splits for c in classes for i in range(per_class)}


@pytest.fixture
def image_folder(tmp_path):
    """``make(**layout)``: an image folder of ``folder_layout(**layout)`` under tmp_path/images."""

    def make(root: Path | None = None, **layout) -> Path:
        return write_images(root or tmp_path / "images", folder_layout(**layout))

    return make


def bomb_png(path: Path, side: int = 20_000) -> Path:
    """A tiny PNG file whose header announces a ``side`` x ``side`` image (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\x00" * (3 * 64 + 1))  # one row's worth: the rest is missing
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def sixteen_bit_png(path: Path, value: int = 32768, size: tuple[int, int] = (48, 40)) -> Path:
    """A 16-bit grayscale PNG of one ``value`` (0..65535); PIL opens it as mode I;16."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, dtype=np.uint16)).save(path)
    return path


@pytest.fixture(scope="session")
def book_site(tmp_path_factory) -> Path:
    """The course website, built once for the session (tests/test_book.py, tests/test_explorer_page.py): its html/."""
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    if shutil.which("npm") is None:
        pytest.skip("the website's explorer page needs npm (Node.js) to install onnxruntime-web; npm is not installed")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import build_book

    out = tmp_path_factory.mktemp("book")
    build_book.build(out)  # raises SystemExit on any Sphinx warning
    return out / "html"


def float_tiff(path: Path, value: float, size: tuple[int, int] = (48, 40)) -> Path:
    """A 32-bit float grayscale TIFF of one ``value``; PIL opens it as mode F."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, dtype=np.float32), mode="F").save(path)
    return path


def key_words(*words: str) -> str:
    """A ``match=`` pattern for a message that holds ``words`` in this order, whatever else it says:
    a test pins what an error must tell (the setting, the value, the fix), not its phrasing."""
    return "(?s)" + ".*".join(re.escape(word) for word in words)
