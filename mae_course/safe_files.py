"""Files that are never half-written, and folders that one run writes at a time.

* :func:`atomic_write` writes to a temporary file beside the target (``.NAME.tmp-PID``), then
  renames it into place: a reader, or a run killed half-way, sees the old file or the new one,
  never a mix. :func:`remove_stale_temporaries` deletes what a killed writer left behind.
* :class:`FolderLock` takes an exclusive lock on a folder (``fcntl.flock`` on ``FOLDER/.lock``):
  a second run started into the same folder is refused with one line, instead of interleaving
  its log and outputs with the first. The lock ends with the process, however it ends.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .errors import ConfigError

try:  # POSIX; elsewhere (Windows) folders are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

LOCK = ".lock"


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], binary: bool = True) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, flush it to disk, rename it into place.

    An OSError (a full or read-only disk) names ``path``, also when the writer turned it into an error
    of its own (torch's zip writer raises "RuntimeError: ... unexpected pos"); the previous file stays
    as it was.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as e:
        cause = next((c for c in _causes(e) if isinstance(c, OSError)), None)
        if cause is None:
            raise
        raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)


def _causes(error: BaseException) -> list[BaseException]:
    """``error`` and the errors it was raised from or while handling, innermost last."""
    chain = [error]
    while (inner := chain[-1].__cause__ or chain[-1].__context__) is not None and inner not in chain:
        chain.append(inner)
    return chain


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Indented JSON, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files (``.*.tmp-*``) that killed writers left in ``folder``; returns how many.

    Call it only while holding the folder's lock: then no one else is writing there.
    """
    stale = [p for p in folder.glob(".*.tmp-*") if p.is_file()] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


class FolderLock:
    """An exclusive lock on ``folder`` (created if needed) while in the ``with`` block.

    Raises ConfigError, naming the holder's process id, when another process holds it. ``name``
    is the lock file: another name locks one output of the folder rather than all of it.
    """

    def __init__(self, folder: str | os.PathLike, what: str = "--output-dir", name: str = LOCK):
        self.folder, self.what, self.name = Path(folder).expanduser(), what, name
        self.file: IO | None = None

    def __enter__(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return self
        self.file = open(self.folder / self.name, "a+")
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            self.file = None
            what = self.folder if self.name == LOCK else self.folder / self.name.removeprefix(".").removesuffix(".lock")
            raise ConfigError(
                f"{what} is in use by another run (process {holder}); wait for it to end, or choose another {self.what}"
            ) from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_UN)
            self.file.close()
            self.file = None
