"""Lesson 06: the released MAE checkpoints of the paper's authors: where to get them, how to load them.

    from mae_course.hub import download_released, load_released
    path = download_released("mae_visualize_vit_large")        # ~1.3 GB, once
    model = load_released("mae_visualize_vit_large")           # a MaskedAutoencoder, strict load

The *visualize* files hold full models (encoder and decoder) trained with pixel targets, made
for looking at reconstructions; the *pretrain* files hold encoders only (for fine-tuning and
probing; ``*_full`` adds the decoder). All use the official parameter layout, which the
course's models share.
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import torch

from ..errors import DataError
from ..model.mae import MaskedAutoencoder
from ..model.registry import load_model

_BASE = "https://dl.fbaipublicfiles.com/mae"
RELEASED: dict[str, tuple[str, str]] = {  # name -> (url, architecture)
    "mae_visualize_vit_base": (f"{_BASE}/visualize/mae_visualize_vit_base.pth", "mae_vit_base_patch16"),
    "mae_visualize_vit_large": (f"{_BASE}/visualize/mae_visualize_vit_large.pth", "mae_vit_large_patch16"),
    "mae_visualize_vit_large_ganloss": (
        f"{_BASE}/visualize/mae_visualize_vit_large_ganloss.pth",
        "mae_vit_large_patch16",
    ),
    "mae_visualize_vit_huge": (f"{_BASE}/visualize/mae_visualize_vit_huge.pth", "mae_vit_huge_patch14"),
    "mae_pretrain_vit_base": (f"{_BASE}/pretrain/mae_pretrain_vit_base.pth", "mae_vit_base_patch16"),
    "mae_pretrain_vit_large": (f"{_BASE}/pretrain/mae_pretrain_vit_large.pth", "mae_vit_large_patch16"),
    "mae_pretrain_vit_huge": (f"{_BASE}/pretrain/mae_pretrain_vit_huge.pth", "mae_vit_huge_patch14"),
    "mae_pretrain_vit_base_full": (f"{_BASE}/pretrain/mae_pretrain_vit_base_full.pth", "mae_vit_base_patch16"),
    "mae_pretrain_vit_large_full": (f"{_BASE}/pretrain/mae_pretrain_vit_large_full.pth", "mae_vit_large_patch16"),
    "mae_pretrain_vit_huge_full": (f"{_BASE}/pretrain/mae_pretrain_vit_huge_full.pth", "mae_vit_huge_patch14"),
}


def _known(name: str) -> tuple[str, str]:
    if name not in RELEASED:
        raise DataError(f"unknown released checkpoint {name!r}; choose one of {', '.join(RELEASED)}")
    return RELEASED[name]


def released_path(name: str, folder: str | os.PathLike | None = None) -> Path:
    """Where ``download_released`` puts a file (``folder``, by default ``~/.cache/mae_course/released``)."""
    _known(name)
    root = (
        Path(folder)
        if folder is not None
        else Path(os.environ.get("MAE_COURSE_CACHE", Path.home() / ".cache" / "mae_course")) / "released"
    )
    return root.expanduser() / f"{name}.pth"


def download_command(name: str, folder: str | os.PathLike | None = None) -> str:
    """The shell command that fetches a released checkpoint into the folder the loader reads, for
    machines where Python has no network."""
    return f"wget -P {released_path(name, folder).parent} {_known(name)[0]}"


def download_released(name: str, folder: str | os.PathLike | None = None) -> Path:
    """Download a released checkpoint once (with a progress bar); returns its path."""
    url, _ = _known(name)
    path = released_path(name, folder)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=True)
    except (urllib.error.URLError, OSError) as e:
        raise DataError(
            f"could not download {name} from {url} ({e}); download it yourself with: {download_command(name, folder)}"
        ) from None
    return path


def load_released(name: str, folder: str | os.PathLike | None = None, **overrides) -> MaskedAutoencoder:
    """Load a downloaded released checkpoint into the course's MaskedAutoencoder (strictly).

    Encoder-only ``mae_pretrain_*`` files (without ``_full``) have no decoder: load those into
    the classifier instead (``--checkpoint`` of finetune or linprobe).
    """
    _, architecture = _known(name)
    path = released_path(name, folder)
    if not path.exists():
        raise DataError(f"{path} is not there yet; run download_released({name!r}) or: {download_command(name)}")
    if name.startswith("mae_pretrain_") and not name.endswith("_full"):
        raise DataError(
            f"{name} holds the encoder only; "
            f"use it as --checkpoint of linprobe or finetune (with --model {architecture})"
        )
    return load_model(path, architecture, **overrides)
