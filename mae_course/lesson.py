"""Small helpers every lesson uses: the fast mode of the tests, quiet runs, and an environment report."""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import platform
import sys

import torch

FAST_ENV = "MAE_COURSE_FAST"


def fast_mode() -> bool:
    """True when ``MAE_COURSE_FAST=1``: the tests shrink training to seconds with it.

    A learner's run never sets it, so lessons train at their full, stated length.
    """
    return os.environ.get(FAST_ENV, "").lower() in ("1", "true", "yes")


_QUIET = contextvars.ContextVar("mae_course_quiet_runs", default=False)


@contextlib.contextmanager
def quiet_runs():
    """Inside this block every training job (pretraining, probing, fine-tuning, segmentation, and the
    sweeps and evaluations made of them) prints one line when it ends, with its result and time,
    instead of its opening line, its progress bars and its stage notes: a lesson's cell then shows
    one line per run, not a log.

        with quiet_runs():
            probe = linprobe(LinprobeConfig(...))   # prints "linprobe: top1 38.7% after 90 epochs, ..."
    """
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)


def runs_quietly() -> bool:
    """True inside :func:`quiet_runs`."""
    return _QUIET.get()


def on_colab() -> bool:
    return "google.colab" in sys.modules


def environment_report() -> str:
    """Versions of Python and the course's libraries, and the hardware PyTorch sees."""
    lines = [f"Python       {platform.python_version()}"]
    for name in ("torch", "torchvision", "einops", "matplotlib", "ipywidgets", "mae_course"):
        try:
            version = importlib.import_module(name).__version__
        except ImportError:
            version = "not installed"
        lines.append(f"{name:<12} {version}")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        device = f"GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB)"
        if torch.cuda.device_count() > 1:
            device += f" x {torch.cuda.device_count()}"
    else:
        device = f"CPU only ({os.cpu_count()} cores, {torch.get_num_threads()} threads for PyTorch)"
    lines.append(f"device       {device}")
    lines.append(
        f"running on   {'Colab' if on_colab() else 'a local Jupyter'}{' (fast test mode)' if fast_mode() else ''}"
    )
    return "\n".join(lines)
