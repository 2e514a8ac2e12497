"""Where a result came from: the hardware, the software and the commit of the course's code."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch
import torchvision

from .safe_files import atomic_write_json


def git_commit() -> str:
    """The commit of the course's source tree, with '+changes' when it has uncommitted edits."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if commit.returncode != 0:
        return "unknown (not a git checkout)"
    return commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def hardware() -> dict[str, Any]:
    """The accelerator (or CPU) PyTorch runs on, and the library versions."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
    if torch.cuda.is_available():
        info.update(device=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(), cuda=torch.version.cuda)
    else:
        info.update(device=f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)")
    return info


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's with the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def provenance() -> dict[str, Any]:
    return {"hardware": hardware(), "git_commit": git_commit()}


def started(folder: Path) -> dict[str, Any]:
    """The provenance of a long job's *first* start, kept in ``folder/started.json``.

    A sweep or an evaluation may be resumed later, at another commit; what it reports is where
    it started (and, by its results, what it collected). The first call writes the file.
    """
    path = Path(folder) / "started.json"
    if path.exists():
        return json.loads(path.read_text())
    record = provenance()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)
    return record
