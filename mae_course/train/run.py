"""Lesson 05: a run's folder, its log and its checkpoints: what makes a long run safe to stop.

Every training job writes into one folder through :class:`Run`:

    config.json            the settings (and those of the earlier parts of a resumed run)
    log.jsonl              one JSON object per logged step and per epoch
    checkpoint-last.pth    everything needed to resume exactly: weights, optimizer, loss scaler,
                           the position (epoch, step, micro-batch, the epoch's loss so far) and
                           every process's random generators (a ``weights_only`` .pth)
    model.safetensors ...  the job's final files: the weights (tensors only, with the settings
                           of config.json in the header), and the job's own

What a run promises:

* **Nothing is half-written.** Every file is written to a temporary file and renamed into
  place; the temporaries a killed run left are deleted when the next one starts.
* **One writer per folder.** The folder is locked while a run writes it; a second run is refused.
* **One run per folder.** A folder with any file of a run is reused only to resume it, or after
  ``--overwrite`` has removed all of them (:mod:`~mae_course.train.run_folder`); a resume must keep
  the size of a step (:mod:`~mae_course.train.step_plan`), which the step count and the lr schedule are counted in.
* **Ctrl-C stops at a step boundary.** The first Ctrl-C only raises a flag; the loop sees it at
  the end of the current optimizer step, the run saves a checkpoint there and stops. Resuming
  then gives the very losses of an uninterrupted run: the saved random generators are those
  of that boundary, not of a step half-drawn. (A second Ctrl-C stops at once, keeping the last
  checkpoint.) A run killed outright resumes from its last checkpoint, exactly too.
* **Only good checkpoints.** Weights that became NaN or infinite are never saved.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import atomic_save, load_checkpoint, load_weights, save_weights
from ..errors import CheckpointError, ConfigError, NonFiniteLossError
from ..provenance import provenance
from ..safe_files import FolderLock, atomic_write_json, remove_stale_temporaries
from .distributed import Runtime, everyone
from .run_folder import (  # noqa: F401 - the folder's file names, also imported from here
    CHECKPOINT,
    CONFIG,
    FINAL_MODEL,
    LOG,
    METRICS,
    OLD_FINAL_MODEL,
    JsonLog,
    final_model,
    remove_run_files,
    run_marker,
)
from .step_plan import same_steps, saved_plan


@dataclass
class Progress:
    """Where a run stands. Saved in every checkpoint; a resumed run continues from it."""

    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps finished
    micro_in_epoch: int = 0  # micro-batches finished in the current epoch
    epoch_loss_sum: float = 0.0  # this epoch's micro-batch losses so far, summed (this process)
    epoch_loss_count: int = 0  # ... and counted, so that the epoch's mean covers all of it after a resume
    seconds: float = 0.0  # wall time spent in epochs (training, validation) so far, over every part of the run

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], path: Path) -> Progress:
        """The progress saved in ``ckpt``, checked (a crafted file is a CheckpointError, not a traceback)."""
        values = {}
        for f in fields(cls):
            value = ckpt.get(f.name, f.default)
            kind = int if f.type == "int" else float
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
            if not ok or (kind is int and value != int(value)):
                raise CheckpointError(f"{path} is not a usable checkpoint: its {f.name} is {value!r}")
            values[f.name] = kind(value)
        return cls(**values)


def check_run_dir(output_dir: str, resume: str | None, overwrite: bool) -> tuple[Path, Path | None]:
    """Check the output folder and the checkpoint to resume from, before any work starts.

    Returns ``(folder, checkpoint to resume or None)`` and changes nothing on disk. A folder
    that already holds a run is only reused with ``resume`` (continue it) or ``overwrite``
    (start over): never silently.
    """
    out = Path(output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output dir {out} exists and is not a folder")
    resume_path = None
    if resume is not None:
        resume_path = out / CHECKPOINT if resume == "auto" else Path(resume).expanduser()
        if not resume_path.is_file():
            raise FileNotFoundError(f"nothing to resume: no checkpoint at {resume_path}")
    elif not overwrite and (held := run_marker(out)) is not None:
        resumable = (out / CHECKPOINT).exists()
        raise ConfigError(
            f"{out} already holds a run ({held}{'' if resumable else f', without its {CHECKPOINT}'}); pass "
            f"{'--resume to continue it, --overwrite' if resumable else '--overwrite'} to start over, or choose "
            "another --output-dir"
        )
    return out, resume_path


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's random generators, as tensors a checkpoint can hold: the CPU's, and the one of
    its own GPU when it runs on one (not every visible GPU's: a machine with fewer GPUs must resume it)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` saved, onto this process's ``device``.

    A checkpoint written before kept a list with the state of every visible GPU; the entry of this
    device's index is used, or, when that GPU did not exist there, the GPU generator is left as seeded.
    """
    torch.set_rng_state(state["torch"])
    saved = state.get("cuda")
    if saved is None or device.type != "cuda":
        return
    if isinstance(saved, list | tuple):
        index = device.index or 0
        if index >= len(saved):
            return
        saved = saved[index]
    torch.cuda.set_rng_state(saved, device)


def changed_settings(saved: dict[str, Any], now: dict[str, Any], ignored: set[str]) -> list[str]:
    """'name old -> new' for every setting that differs between a saved run and this one."""
    return [
        f"{k} {saved[k]} -> {now[k]}" for k in sorted(saved) if k not in ignored and k in now and saved[k] != now[k]
    ]


def all_finite(model: nn.Module) -> bool:
    """Whether every parameter and buffer of ``model`` is finite (one read-back for all of them)."""
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    return bool(torch.stack([t.isfinite().all() for t in tensors]).all()) if tensors else True


class Run:
    """One training job's folder and position. Use it as a context manager around the training.

    ``Run(...)`` only checks the folder (a run that cannot start writes nothing); entering the
    ``with`` block locks the folder, removes stale temporary files, starts a fresh log (unless
    resuming) and turns Ctrl-C into :attr:`stop_requested`.

    Args:
        output_dir, resume, overwrite: the folder, and how to treat a run already in it.
        runtime: this process (only the main process writes).
        kind: the job ("pretrain", "finetune", "linprobe"): a checkpoint of another kind is not resumed.
    """

    def __init__(self, output_dir: str, resume: str | None, overwrite: bool, runtime: Runtime, kind: str):
        self.out, self.resume_path = check_run_dir(output_dir, resume, overwrite)
        self.resume, self.overwrite = resume, overwrite
        self.rt, self.kind = runtime, kind
        self.progress = Progress()
        self.log = JsonLog(self.out / LOG, runtime.is_main)
        self.stop_requested = False
        self._lock: FolderLock | None = None
        self._previous_handler: Any = None

    @property
    def resuming(self) -> bool:
        return self.resume_path is not None

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT

    # ------------------------------------------------------------------ the folder
    def __enter__(self) -> Run:
        error = None
        if self.rt.is_main:
            try:
                self._lock = FolderLock(self.out).__enter__()
                check_run_dir(str(self.out), self.resume, self.overwrite)  # again, now that no one else can write
                remove_stale_temporaries(self.out)
                if not self.resuming:  # with --overwrite: nothing of the previous run may stay beside the new one
                    remove_run_files(self.out)
            except Exception as e:  # noqa: BLE001 - shared with the other processes below, then raised
                error = e
        if not everyone(error is None):
            self.__exit__(None, None, None)
            raise error or ConfigError(f"the main process could not start the run in {self.out}; see its message")
        if not self.rt.distributed and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._on_ctrl_c)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None
        if self._lock is not None:
            self._lock.__exit__(*exc)
            self._lock = None

    def _on_ctrl_c(self, signum, frame) -> None:
        if self.stop_requested:  # the second Ctrl-C: stop now, keeping the last checkpoint
            signal.signal(signal.SIGINT, self._previous_handler or signal.default_int_handler)
            raise KeyboardInterrupt
        self.stop_requested = True
        print(
            "\nCtrl-C: stopping at the end of this step and saving a checkpoint (Ctrl-C again: stop at once, "
            "keeping the last checkpoint)",
            file=sys.stderr,
            flush=True,
        )

    def write_config(self, settings: dict[str, Any]) -> None:
        """Write config.json: ``settings`` and the provenance of this part of the run. Resuming keeps
        the earlier parts' settings under ``earlier_parts`` (with the position each one ended at)."""
        if not self.rt.is_main:
            return
        record = {**settings, **provenance()}
        path = self.out / CONFIG
        if self.resuming and path.exists():
            try:
                earlier = json.loads(path.read_bytes().decode())
            except (UnicodeDecodeError, json.JSONDecodeError):
                earlier = None
            if not isinstance(earlier, dict):
                earlier = {"unreadable": path.read_bytes()[:200].decode(errors="replace")}
            parts = earlier.pop("earlier_parts", [])
            record["resumed_at"] = {"epoch": self.progress.epoch, "step": self.progress.step}
            record["earlier_parts"] = [*parts, earlier]
        atomic_write_json(path, record)

    # ------------------------------------------------------------------ checkpoints
    def save(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        config: dict[str, Any],
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Write a resumable checkpoint (atomically): weights, optimizer, scaler, progress, every
        process's random generators. Refuses non-finite weights: the last good checkpoint is kept."""
        if not everyone(all_finite(model)):
            kept = f" at {self.checkpoint_path}" if self.checkpoint_path.exists() else ""
            raise NonFiniteLossError(
                f"the weights became NaN or infinite in the update of step {self.progress.step} (epoch "
                f"{self.progress.epoch + 1}); not saved, so the last good checkpoint is kept{kept}. Try a lower --blr"
            )
        rng = self._gather_rng()
        if not self.rt.is_main:
            return
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            **asdict(self.progress),
            "rng": rng,
            "config": config,
            **(extra or {}),
        }
        atomic_save(state, self.checkpoint_path)

    def save_final(self, model: nn.Module, config: dict[str, Any]) -> None:
        """Write the final weights, model.safetensors, with ``config`` (the settings config.json holds).
        A model.pth there is this run's older final weights (from before safetensors): it is removed."""
        save_weights(model.state_dict(), config, self.out / FINAL_MODEL, config_json=False)
        (self.out / OLD_FINAL_MODEL).unlink(missing_ok=True)

    def _gather_rng(self) -> Any:
        """This process's RNG state, or every rank's (a list) in a multi-process run."""
        state = rng_state(self.rt.device)
        if not self.rt.distributed:
            return state
        gathered: list[Any] = [None] * self.rt.world_size
        torch.distributed.all_gather_object(gathered, state)
        return gathered

    def restore(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        settings: dict[str, Any],
        ignored: set[str],
        seed: int,
        plan: dict[str, int],
    ) -> dict[str, Any]:
        """Load the checkpoint to resume from into ``model``, ``optimizer`` and ``scaler``; set the
        progress and the random generators; returns the checkpoint (for the job's own keys).

        ``settings`` are this run's (compared with the saved ones: changes are printed, except the
        ``ignored`` ones); ``plan`` its :func:`step_plan`, which must make steps of the saved size.
        A checkpoint saved with another number of processes cannot restore each one's generators:
        they are reseeded from ``seed``, the process and the step, and the log says so.
        """
        path = self.resume_path
        ckpt = load_checkpoint(path)
        config = ckpt.get("config")
        if not isinstance(config, dict) or not isinstance(config.get(self.kind), dict):
            raise CheckpointError(f"{path} is not a resumable {self.kind} checkpoint")
        missing = [k for k in ("model", "optimizer", "epoch", "step", "micro_in_epoch", "rng") if k not in ckpt]
        if missing:
            raise CheckpointError(f"{path} is not a resumable {self.kind} checkpoint (no {', '.join(missing)})")
        self.progress = Progress.from_checkpoint(ckpt, path)
        self.progress.micro_in_epoch = same_steps(
            saved_plan(ckpt, self.kind, path), plan, path, self.progress.micro_in_epoch
        )
        saved_model = next((config[k] for k in ("model", "classifier") if isinstance(config.get(k), dict)), None)
        own = getattr(model, "config", None)
        if saved_model is not None and own is not None and saved_model != own:
            differ = sorted(k for k in {*saved_model, *own} if saved_model.get(k) != own.get(k))
            raise CheckpointError(
                f"{path} was trained with other model settings ({', '.join(differ)} differ); resume "
                "with the same --model and model flags"
            )
        if not isinstance(ckpt["model"], dict):
            raise CheckpointError(f"{path} is not a usable checkpoint: its model is a {type(ckpt['model']).__name__}")
        load_weights(model, ckpt["model"])
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
            if scaler is not None and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
        except (ValueError, KeyError, TypeError, RuntimeError, AttributeError) as e:
            raise CheckpointError(
                f"{path} is not a usable checkpoint: its optimizer state does not fit ({e})"
            ) from None
        changed = changed_settings(config[self.kind], settings, ignored)
        if changed and self.rt.is_main:
            print(f"note: resuming with changed settings: {', '.join(changed)}; the lr schedule follows the new ones")
        self._restore_rng(ckpt["rng"], path, seed)
        self.log.keep_until(self.progress.step, self.progress.epoch)
        return ckpt

    def _restore_rng(self, saved: Any, path: Path, seed: int) -> None:
        if isinstance(saved, list) and len(saved) != self.rt.world_size:
            torch.manual_seed(seed + self.rt.rank + 1_000_003 * self.progress.step)
            note = (
                f"{path} was saved by {len(saved)} processes and this run has {self.rt.world_size}: the random "
                f"generators are reseeded from seed {seed}, the process and step {self.progress.step}, so from here "
                "on the data order and masks differ from an uninterrupted run"
            )
            if self.rt.is_main:
                print(f"note: {note}")
            self.log.write({"step": self.progress.step, "note": note})
            return
        state = saved[self.rt.rank] if isinstance(saved, list) else saved
        try:
            set_rng_state(state, self.rt.device)
        except (TypeError, RuntimeError, KeyError) as e:
            raise CheckpointError(
                f"{path} is not a usable checkpoint: its random generator state is broken ({e})"
            ) from None

    def end_epoch(self) -> None:
        """The current epoch is over: the next starts at its first micro-batch, with no loss yet."""
        p = self.progress
        p.epoch, p.micro_in_epoch, p.epoch_loss_sum, p.epoch_loss_count = p.epoch + 1, 0, 0.0, 0

    def save_due(self, save_every: int, epochs: int) -> bool:
        """Whether to save now: every ``save_every`` epochs, at the end, and when Ctrl-C stopped the run."""
        epoch = self.progress.epoch
        return self.stop_requested or epoch % save_every == 0 or epoch == epochs

    def stop_if_requested(self, epochs: int) -> None:
        """After Ctrl-C (and the checkpoint saved at that step): say how to continue, then stop."""
        if self.stop_requested and self.progress.epoch < epochs:
            print(f"\ninterrupted at step {self.progress.step}; saved {self.checkpoint_path}. Continue with --resume")
            raise KeyboardInterrupt
