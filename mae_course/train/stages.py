"""Lessons 07-08: several training jobs in a row, each in a folder of its own, as one resumable command.

``evaluate`` (the three protocols and the baselines) and ``sweep`` (one ablation) are lists of
stages. :class:`Stages` runs them the same way:

* the folder is locked while the command runs (a second one is refused);
* the settings every stage shares are recorded at the first start; a later start with other
  settings is refused (its finished stages would silently be mixed with new ones), while new
  stages may be added;
* a finished stage is kept, an interrupted one resumes from its checkpoint, a new one starts;
* each stage's wall time is recorded beside it, and the results are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..lesson import runs_quietly
from ..provenance import git_commit, started
from ..safe_files import FolderLock, atomic_write_json
from .run import CHECKPOINT, METRICS

STAGE_TIME = "stage_time.json"
# What a collected result keeps of a classifier stage's metrics.json.
CLASSIFIER_RESULTS = ("top1", "top5", "best_top1", "epochs", "wall_time_s", "trained_parameters")


def file_fingerprint(path: str | None) -> dict[str, Any] | None:
    """What identifies a file's content: its size and SHA-256 (None for no file)."""
    if path is None:
        return None
    file = Path(path).expanduser()
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"bytes": file.stat().st_size, "sha256": digest.hexdigest()}


class Stages:
    """Run stages in ``folder``, sharing ``fixed`` settings (recorded in ``settings_file``).

    Args:
        folder: the command's output folder.
        settings_file: where the shared settings are recorded ("sweep.json", "evaluation.json").
        fixed: the settings every stage shares, as JSON values.
        command: what the folder holds ("a sweep", "an evaluation"), for messages.
        recorded: how to read the settings of a folder written before ``settings_file`` existed
            (returns None when it cannot tell).
    """

    def __init__(
        self,
        folder: str,
        settings_file: str,
        fixed: dict[str, Any],
        command: str,
        recorded: Callable[[Path], dict[str, Any] | None] | None = None,
    ):
        self.out = Path(folder).expanduser()
        self.settings_file, self.command = settings_file, command
        self.fixed = json.loads(json.dumps(fixed))  # tuples become lists, as when read back
        self.recorded = recorded
        self._lock = FolderLock(self.out)

    def __enter__(self) -> Stages:
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"output dir {self.out} exists and is not a folder")
        self._lock.__enter__()
        try:
            self._check_same_settings()
            started(self.out)  # where the command first started: hardware and commit
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._lock.__exit__(*exc)

    def _check_same_settings(self) -> None:
        path = self.out / self.settings_file
        theirs = json.loads(path.read_text()) if path.exists() else (self.recorded(self.out) if self.recorded else None)
        if theirs is not None:
            changed = [
                f"{k}: {json.dumps(theirs.get(k))} there, {json.dumps(v)} now"
                for k, v in self.fixed.items()
                if theirs.get(k) != v
            ]
            if changed:
                raise ConfigError(
                    f"{self.out} holds {self.command} with other settings ({'; '.join(changed)}); its finished runs "
                    "would be mixed with new ones. Give the same settings to continue it, or another --output-dir"
                )
        if not path.exists():
            atomic_write_json(path, self.fixed)

    def run(self, name: str, job: Callable[[Any], Any], config: Any, done_file: str) -> None:
        """Run one stage in ``config.output_dir`` unless ``done_file`` is already there."""
        folder = Path(config.output_dir)
        if (folder / done_file).exists():
            print(f"{name}: done before, kept")
            return
        resumed = (folder / CHECKPOINT).exists()
        if resumed:
            config.resume = "auto"  # interrupted before: continue it
        else:
            config.overwrite = True  # leftovers of a run that never saved a checkpoint
        if not runs_quietly():  # quiet: the job's own closing line says what ran
            print(f"{name}: {'resuming' if resumed else 'running'} ({folder})")
        begin = time.perf_counter()
        job(config)
        # a resumed stage's wall time is that of its last part only: say so
        atomic_write_json(folder / STAGE_TIME, {"wall_time_s": time.perf_counter() - begin, "resumed": resumed})

    def write_results(self, results: dict[str, Any], name: str = "results.json") -> dict[str, Any]:
        """Write ``results`` with where they came from: the hardware and commit of the first start,
        and the commit that collected them; returns what was written."""
        results = {**results, **started(self.out), "collected_at_commit": git_commit()}
        atomic_write_json(self.out / name, results)
        return results


def classifier_results(folder: Path) -> dict[str, Any]:
    """The part of a finished classifier stage's metrics.json that collected results keep."""
    metrics = json.loads((folder / METRICS).read_text())
    return {k: metrics[k] for k in CLASSIFIER_RESULTS}


def stage_time(folder: Path) -> dict[str, Any]:
    """The recorded wall time of a stage ({} when it has none)."""
    path = folder / STAGE_TIME
    return json.loads(path.read_text()) if path.exists() else {}
