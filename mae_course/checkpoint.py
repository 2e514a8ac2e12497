"""Saving and loading checkpoints safely.

The course's own checkpoints hold plain tensors, numbers and strings: a ``state_dict``
under ``'model'`` and a JSON-serialisable ``'config'`` that says how to rebuild the
model, never a pickled object. Two formats:

* **Final weights** are ``.safetensors`` files (:func:`save_weights`): tensors only, nothing
  executable, readable by any framework. The config is stored as JSON in the file's header, so
  the one file is enough, and also as JSON beside it for a reader that wants only the config
  (``NAME.json``; a run folder's ``config.json`` holds the same settings). The header also holds
  a checksum of the tensors, checked when the file is loaded (files without one load unchecked).
* **Training state** (``checkpoint-last.pth``: optimizer, random generators, position) is a
  ``.pth`` loaded with ``torch.load(weights_only=True)``, which refuses to run code from a file.
  The released MAE checkpoints are ``.pth`` files too, and also carry an ``argparse.Namespace``
  of their arguments: that class, and only it, is allowed too. A ``.pth`` is a zip file whose
  parts carry CRC-32s: they are checked before the file is loaded.

:func:`load_checkpoint` reads both, so every loader takes either.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError
from .safe_files import atomic_write, atomic_write_json

_SHOW = 8  # names listed in an error before "... and N more"
SAFETENSORS = ".safetensors"
CHECKSUM = "tensors_sha256"  # the safetensors header's key for :func:`tensors_checksum`


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place.

    A run killed while saving leaves the previous file intact, never a truncated one; a full
    or read-only disk is an OSError that names ``path``.
    """
    atomic_write(path, lambda f: torch.save(obj, f))


def save_weights(
    state_dict: Mapping[str, torch.Tensor], config: Any, path: str | os.PathLike, config_json: bool = True
) -> None:
    """Write final weights as a ``.safetensors`` file (atomically), with ``config`` (JSON) in its header.

    The tensors are saved as they are (dtype kept), each as a contiguous copy on the CPU. With
    ``config_json`` the config is also written beside the file, as ``{"config": ...}`` in
    ``NAME.json`` (first, so that the weights file being there means both are); a run passes
    False: its ``config.json`` already holds the same settings, with the run's provenance.
    """
    import safetensors.torch  # here, so that importing the course does not need it

    path = Path(path)
    tensors, seen = {}, set()
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        storage = tensor.untyped_storage().data_ptr()
        tensors[name] = tensor.clone() if tensor.numel() and storage in seen else tensor  # tied weights: a copy each
        seen.add(storage)
    metadata = {"format": "pt", "config": json.dumps(config), CHECKSUM: tensors_checksum(tensors)}
    data = safetensors.torch.save(tensors, metadata=metadata)
    if config_json:
        atomic_write_json(path.with_suffix(".json"), {"config": config})
    atomic_write(path, lambda f: f.write(data))


def tensors_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """The SHA-256 of the tensors' names, dtypes, shapes and bytes, in name order (hex): what a damaged
    copy of a weights file no longer matches."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data if tensor.numel() else b"")
    return digest.hexdigest()


def is_safetensors(path: Path) -> bool:
    """Whether ``path`` is (or is named as) a safetensors file: an 8-byte header length, then a JSON header."""
    if path.suffix == SAFETENSORS:
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def _load_safetensors(path: Path) -> dict[str, Any]:
    """``{"model": tensors, "config": ...}`` from a safetensors file; the config from its header, else
    from the JSON beside it (``NAME.json``'s ``"config"``, or the run folder's ``config.json``)."""
    import safetensors.torch

    data = path.read_bytes()  # all of it (as torch.load does): no file stays mapped after loading
    try:
        tensors = safetensors.torch.load(data)
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    except Exception as e:  # a truncated copy, random bytes, a broken header: the reader fails in several ways
        raise CheckpointError(
            f"{path} is not a safetensors file ({type(e).__name__}: {(str(e).splitlines() or [''])[0]})"
        ) from None
    metadata = header.get("__metadata__") or {}
    if CHECKSUM in metadata and metadata[CHECKSUM] != tensors_checksum(tensors):  # files without one load unchecked
        raise CheckpointError(
            f"{path} is damaged: its tensors do not match the checksum in its header ({CHECKSUM}); the file changed "
            "after it was written (a bad copy or disk): copy it again"
        )
    checkpoint: dict[str, Any] = {"model": tensors}
    if "config" in metadata:
        try:
            checkpoint["config"] = json.loads(metadata["config"])
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: the config in its header is not JSON ({e})") from None
    else:
        config = _config_beside(path)
        if config is not None:
            checkpoint["config"] = config
    return checkpoint


def _config_beside(path: Path) -> Any:
    own, folder = path.with_suffix(".json"), path.parent / "config.json"
    for candidate in (own, folder):
        if candidate.is_file():
            try:
                saved = json.loads(candidate.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{path}: the config beside it, {candidate}, is not JSON ({e})") from None
            if candidate == own:
                if isinstance(saved, dict) and "config" in saved:
                    return saved["config"]
            elif isinstance(saved, dict):
                return saved
    return None


def _check_crcs(path: Path) -> None:
    """Check every part of a (zip) .pth file against its CRC-32: torch.load does not, and loads damaged
    tensor bytes as they are. Parts whose CRC-32 is 0 were written without one
    (``torch.serialization.set_crc32_options(False)``) and are not checked; a file that is not a zip
    (the legacy format, or no checkpoint) is left to torch.load."""
    if not zipfile.is_zipfile(path):
        return
    name = None
    try:
        with zipfile.ZipFile(path) as archive:
            for part in archive.infolist():
                name = part.filename
                if part.CRC:
                    with archive.open(part) as f:
                        while f.read(1 << 24):  # the CRC-32 is compared at the end of the part
                            pass
    except (zipfile.BadZipFile, EOFError) as e:
        detail = f"its part {name} does not match its CRC-32" if "CRC" in str(e) else f"{type(e).__name__}: {e}"
        raise CheckpointError(
            f"{path} is damaged: {detail}; the file changed after it was written (a bad copy or disk): copy it again, "
            "or resume from another checkpoint"
        ) from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file onto the CPU without unpickling arbitrary objects.

    A ``.safetensors`` file (by its name or its content) gives ``{"model": its tensors,
    "config": its config}``; a ``.pth`` file gives the dictionary it holds.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is damaged (its tensors do not match the CRC-32s of a .pth, or the
            checksum in a safetensors header), is not a safetensors file or a PyTorch checkpoint, holds a
            pickled object (anything beyond tensors, containers, numbers, strings and
            ``argparse.Namespace``), or is not a dictionary.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if is_safetensors(path):
        return _load_safetensors(path)
    _check_crcs(path)
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


WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _same_kind(saved: Any, own: torch.Tensor) -> bool:
    """Whether ``saved`` may be copied into ``own``: a floating-point weight from one of :data:`WEIGHT_DTYPES`
    (not bool, integer, fp8 or complex numbers, which a copy would cast silently), anything else of its dtype."""
    if not isinstance(saved, torch.Tensor):
        return False
    return saved.dtype in WEIGHT_DTYPES if own.is_floating_point() else saved.dtype == own.dtype


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> list[str]:
    """Copy ``state_dict`` into ``model``, naming every missing, unexpected or misshapen key.

    With ``strict=False`` missing and unexpected keys are allowed (and the missing ones
    returned), but a shape mismatch, or weights of another kind of number, are always errors.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    misshapen = [
        f"{k} (checkpoint {tuple(state_dict[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in state_dict and isinstance(state_dict[k], torch.Tensor) and state_dict[k].shape != own[k].shape
    ]
    mistyped = [
        f"{k} (checkpoint {getattr(state_dict[k], 'dtype', type(state_dict[k]).__name__)}, model {own[k].dtype}"
        + ("; weights are float16, bfloat16, float32 or float64)" if own[k].is_floating_point() else ")")
        for k in own
        if k in state_dict and not _same_kind(state_dict[k], own[k])
    ]
    problems = []
    if misshapen:
        problems.append(f"shape mismatch: {_names(misshapen)}")
    if mistyped:
        problems.append(f"wrong dtype: {_names(mistyped)}")
    if strict and missing:
        problems.append(f"missing keys: {_names(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if problems:
        raise CheckpointError("the checkpoint does not fit the model; " + "; ".join(problems))
    model.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)
    return missing
