"""Lesson 05: what a run's folder holds, and its log.

A run writes a fixed set of files into its folder (see :mod:`mae_course.train.run`). Any one of
:data:`RUN_MARKERS` means the folder holds a run, finished or not, even when its checkpoint is
gone: it is reused only to resume it or, with ``--overwrite``, after every file of
:data:`RUN_FILES` is removed, so that an overwrite stopped half-way never leaves the old run's
weights or figures beside the new run's log.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

CHECKPOINT = "checkpoint-last.pth"
FINAL_MODEL = "model.safetensors"
OLD_FINAL_MODEL = "model.pth"  # the final weights of a run made before they were safetensors
LOG = "log.jsonl"
CONFIG = "config.json"
METRICS = "metrics.json"  # a classifier's final measurements

# Any of these says that a folder holds a run (glob patterns, the checkpoint first) ...
RUN_MARKERS = (CHECKPOINT, CONFIG, LOG, "model.*", METRICS)
# ... and these are every file a job writes there: what --overwrite removes (the checkpoint first, so that
# a removal stopped half-way never leaves a resumable old run).
RUN_FILES = (*RUN_MARKERS, "loss.png", "reconstructions*.png", "stage_time.json")


def final_model(folder: str | Path) -> Path:
    """The final weights of the run in ``folder``: its model.safetensors, or the model.pth of a run
    made before final weights were safetensors (when only that one is there)."""
    folder = Path(folder)
    old = folder / OLD_FINAL_MODEL
    return old if old.is_file() and not (folder / FINAL_MODEL).exists() else folder / FINAL_MODEL


def run_marker(folder: Path) -> str | None:
    """The name of the first file that says ``folder`` holds a run, or None."""
    for pattern in RUN_MARKERS:
        found = sorted(p.name for p in folder.glob(pattern)) if folder.is_dir() else []
        if found:
            return found[0]
    return None


def remove_run_files(folder: Path) -> None:
    """Delete every file a run wrote in ``folder`` (call it holding the folder's lock)."""
    for pattern in RUN_FILES:
        for path in sorted(folder.glob(pattern)) if folder.is_dir() else []:
            path.unlink(missing_ok=True)


def _readable(record: Any) -> bool:
    """A log record: a JSON object whose step and epoch, where given, are numbers."""
    return isinstance(record, dict) and all(
        isinstance(record.get(k, 0), int | float)
        and not isinstance(record.get(k, 0), bool)
        and math.isfinite(record.get(k, 0))
        for k in ("step", "epoch")
    )


class JsonLog:
    """An append-only JSON-lines file; only the main process writes.

    Reading skips a line that is not a log record (the last line of a run killed while writing it,
    bytes that are not UTF-8, JSON that is not an object) and counts it in ``unreadable``.
    """

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled
        self.unreadable = 0

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records, self.unreadable = [], 0
        for line in self.path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode())
            except (UnicodeDecodeError, json.JSONDecodeError):
                record = None
            if _readable(record):
                records.append(record)
            else:
                self.unreadable += 1
        return records

    def keep_until(self, step: int, epoch: int) -> int:
        """Drop the records logged after the position ``(step, epoch)`` a run resumes from (they
        will be logged again), and unreadable lines; returns how many were dropped."""
        if not (self.enabled and self.path.exists()):
            return 0
        records = self.read()
        kept = [
            r for r in records if r.get("step", 0) <= step and (r.get("step") is not None or r.get("epoch", 0) <= epoch)
        ]
        dropped = len(records) - len(kept) + self.unreadable
        if dropped:
            text = "".join(json.dumps(r) + "\n" for r in kept)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text(text)
            tmp.replace(self.path)
        return dropped
