"""Lessons 00-08: what ships inside the package (the repository's data/ folder): photos, a small pretrained
MAE, and results the project measured with its own commands."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import DataError

DEFAULT_CHECKPOINT = "mae_vit_mini_builtin32"


def shipped_dir() -> Path:
    """The shipped data folder (``data/`` in the repository, ``mae_course/_shipped`` when installed)."""
    return Path(str(resources.files("mae_course._shipped")))


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        available = sorted(p.name for p in path.parent.glob("*")) if path.parent.is_dir() else []
        raise DataError(f"no shipped {what} {path.name}; available: {', '.join(available) or 'none'}")
    return path


def shipped_checkpoint(name: str = DEFAULT_CHECKPOINT) -> Path:
    """The small MAE pretrained by the course's own command on the built-in data; its provenance
    (command, config, log, time, hardware, commit) is in the ``.json`` and ``.log.jsonl`` beside it.
    A ``.safetensors`` file: float16 tensors, with the model config in its header."""
    return _existing(shipped_dir() / "checkpoints" / f"{name}.safetensors", "checkpoint")


def shipped_results(name: str) -> Path:
    """A results JSON measured by the course's commands, e.g. ``shipped_results("evaluation")``."""
    return _existing(shipped_dir() / "results" / f"{name}.json", "results")
