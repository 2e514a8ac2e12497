"""Saving and loading checkpoints safely.

The course's own checkpoints hold plain tensors, numbers and strings: a ``state_dict``
under ``'model'`` and a JSON-serialisable ``'config'`` that says how to rebuild the
model, never a pickled object. Everything is loaded with ``torch.load(weights_only=True)``,
which refuses to run code from a file. The released MAE training checkpoints also carry
an ``argparse.Namespace`` of their arguments: that class, and only it, is allowed too.
"""

from __future__ import annotations

import argparse
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError
from .safe_files import atomic_write

_SHOW = 8  # names listed in an error before "... and N more"


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place.

    A run killed while saving leaves the previous file intact, never a truncated one; a full
    or read-only disk is an OSError that names ``path``.
    """
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file onto the CPU without unpickling arbitrary objects.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is not a PyTorch checkpoint, holds a pickled object
            (anything beyond tensors, containers, numbers, strings and
            ``argparse.Namespace``), or is not a dictionary.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        message = str(e)
        if "GLOBAL" in message or "global" in message:
            detail = next((line.strip() for line in message.splitlines() if "GLOBAL" in line), message.splitlines()[0])
            raise CheckpointError(
                f"{path} contains a pickled Python object, which is not loaded for safety ({detail}); "
                "save checkpoints as {'model': model.state_dict()}"
            ) from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({message.splitlines()[0]})") from None
    except Exception as e:  # a truncated zip, a text file, random bytes: the unpickler fails in many ways
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint ({type(e).__name__}: {(str(e).splitlines() or [''])[0]})"
        ) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dictionary")
    return dict(obj)


def state_dict_of(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights inside a checkpoint: under 'model' (course and official files),
    'state_dict', or the checkpoint itself if it is a bare state_dict."""
    for key in ("model", "state_dict"):
        if isinstance(checkpoint.get(key), Mapping):
            return dict(checkpoint[key])
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return dict(checkpoint)
    raise CheckpointError(f"no model weights found; the checkpoint has keys {sorted(checkpoint)[:_SHOW]}")


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f" ... and {len(keys) - _SHOW} more" if len(keys) > _SHOW else "")


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> list[str]:
    """Copy ``state_dict`` into ``model``, naming every missing, unexpected or misshapen key.

    With ``strict=False`` missing and unexpected keys are allowed (and the missing ones
    returned), but a shape mismatch is always an error.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    misshapen = [
        f"{k} (checkpoint {tuple(state_dict[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    problems = []
    if misshapen:
        problems.append(f"shape mismatch: {_names(misshapen)}")
    if strict and missing:
        problems.append(f"missing keys: {_names(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if problems:
        raise CheckpointError("the checkpoint does not fit the model; " + "; ".join(problems))
    model.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)
    return missing
