"""Lesson 09: pre-resizing an image folder once, so that pretraining reads and decodes less every epoch.

    python -m mae_course prepare /data/imagenet /data/imagenet-256           # train/ + val/ layout
    python -m mae_course prepare SRC DST --short-side 256 --quality 90 --workers 16 --skip-bad-images

Every image under SRC (any nesting of folders: class folders, ImageNet's train/ and val/) is
written to the same relative path under DST as an RGB JPEG:

- an image whose shorter side is larger than ``short_side`` (default 256) is resized (bicubic,
  antialiased) so that its shorter side is exactly ``short_side``, the longer side in proportion
  (rounded to the nearest pixel), and saved at JPEG ``quality`` (default 90);
- a smaller image is never upscaled: an RGB JPEG is copied byte for byte (no second lossy
  compression), anything else (PNG, grayscale or CMYK JPEG, ...) is converted to RGB and saved at
  ``quality`` at its own size;
- the file keeps its stem and a .jpg/.jpeg/.JPEG extension keeps its spelling; other extensions
  become .jpg (``cat.png`` -> ``cat.jpg``);
- EXIF orientation is not applied (neither data pipeline of the course applies it when training).

Pretraining at 224 px crops a RandomResizedCrop of at least 20% of the image, so 256 px on the
shorter side loses little: the crops are resized down to 224 anyway.

The command can be stopped and run again: a file whose output exists is skipped (outputs are
written to a temporary file named after the output and the process, ``.NAME.PID.part``, and
renamed, so an interrupted write never leaves half a JPEG; the next start deletes those of its
own outputs, and nothing else of DST). DST is locked while ``prepare`` writes it, and its
settings are recorded in DST/prepare_settings.json: a rerun with another ``--short-side`` or
``--quality`` is refused, unless ``--overwrite`` rewrites every output. Each real folder of SRC
is walked once (a symbolic link that loops is not followed again) and only regular files are
read (a FIFO or a socket named like an image is skipped and counted). An unreadable input file
(a decompression bomb among them) stops the command with its name, or, with
``skip_bad_images``, is counted and listed in DST/prepare_report.json (which every run writes,
with its summary). 16-bit images are scaled to 8 bits, not clipped.

Disk arithmetic for ImageNet-1K (1,281,167 train + 50,000 val = 1,331,167 images). The originals
are about 140 GB (the ILSVRC2012 train archive alone is about 138 GB), more than a 64 GB disk
holds; SRC may live elsewhere (another volume, a network mount), only DST must fit. The most
common ImageNet size is 500 x 375 pixels, which becomes 341 x 256 (87k pixels); a natural photo
of that size at JPEG quality 90 typically takes around 20-35 KB (a rough figure: it depends on
the photo's detail; the smooth synthetic images of the tests say nothing about photos). So DST
needs about 1.33M x 20-35 KB = 26-45 GB, which fits on a 64 GB disk with room for checkpoints.
A trial run on a few thousand real images prints its own projection for ImageNet-1K.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import shutil
import stat
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import MISSING, asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension
from tqdm.auto import tqdm

from ..config import option
from ..errors import ConfigError, DataError
from ..safe_files import FolderLock, atomic_write_json
from .image_files import UNREADABLE, check_size, to_rgb

REPORT = "prepare_report.json"
SETTINGS = "prepare_settings.json"
JPEG_SUFFIXES = (".jpg", ".jpeg")  # compared lower-case: .JPEG (ImageNet's) is kept as it is
IMAGENET_1K_IMAGES = 1_281_167 + 50_000  # train + val
WRITTEN = ("resized", "copied", "converted")  # how an output came to be written (see prepare_one)


@dataclass
class PrepareConfig:
    """Settings of ``prepare``: where from, where to, and the size and quality of the copies."""

    src: str = option(MISSING, "the image folder to copy (any nesting of class folders)", positional=True)
    dst: str = option(MISSING, "where the copy goes (same relative paths, JPEG files)", positional=True)
    short_side: int = option(256, "shorter side of larger images after resizing; smaller images are never upscaled")
    quality: int = option(90, "JPEG quality of re-encoded images (small RGB JPEGs are copied as they are)")
    workers: int | None = option(None, "processes; 0: in this one; None: one per CPU core")
    skip_bad_images: bool = option(
        False, "count unreadable files and list them in DST/prepare_report.json instead of stopping"
    )
    overwrite: bool = option(
        False, "rewrite every output, even those already there (e.g. for another --short-side or --quality)"
    )

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad setting."""
        if self.short_side < 1:
            raise ConfigError(f"short side must be at least 1 pixel, got {self.short_side}")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"JPEG quality must be in [1, 100], got {self.quality}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        src, dst = Path(self.src).expanduser().resolve(), Path(self.dst).expanduser().resolve()
        if not src.is_dir():
            raise DataError(f"source folder not found: {self.src}")
        if dst == src or src in dst.parents:
            raise ConfigError(f"the destination {self.dst} must not be the source folder or inside it")


class Job(NamedTuple):
    src: str  # an input image
    dst: str  # its output JPEG


class Outcome(NamedTuple):
    status: str  # one of WRITTEN, "done" (output already there) or "bad" (unreadable input)
    src: str
    bytes_in: int  # size of the input file (0 when it was not read)
    bytes_out: int  # size of the output file (0 when none)
    error: str = ""


def output_name(name: str) -> str:
    """The output file name (or relative path): the same stem, a JPEG extension (kept when it is one)."""
    path = Path(name)
    return name if path.suffix.lower() in JPEG_SUFFIXES else path.with_name(path.stem + ".jpg").as_posix()


class Found(NamedTuple):
    jobs: list[Job]  # every image file, sorted, with its output path
    not_files: list[str]  # paths named like images that are not regular files (FIFOs, sockets, broken links)


def find_jobs(src: str | Path, dst: str | Path) -> Found:
    """Every image file under ``src`` (torchvision's image extensions, any depth), sorted, with its
    output path. Each real folder is walked once, however many links lead to it."""
    src, dst = Path(src), Path(dst)
    jobs, outputs, not_files, seen = [], {}, [], set()
    for folder, dirs, files in os.walk(src, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back to a folder already walked (a loop, or a second way in)
            dirs.clear()
            continue
        seen.add(real)
        dirs.sort()
        relative = Path(folder).relative_to(src)
        for name in sorted(files):
            if not has_file_allowed_extension(name, IMG_EXTENSIONS):
                continue
            path = Path(folder) / name
            try:
                regular = stat.S_ISREG(path.stat().st_mode)
            except OSError:  # a broken link
                regular = False
            if not regular:
                not_files.append(str(path))
                continue
            out = dst / relative / output_name(name)
            if out in outputs:
                raise DataError(f"{outputs[out]} and {path} would both be written to {out}; rename one")
            outputs[out] = path
            jobs.append(Job(str(path), str(out)))
    return Found(jobs, not_files)


def target_size(width: int, height: int, short_side: int) -> tuple[int, int] | None:
    """(width, height) with the shorter side ``short_side`` and the aspect kept, or None when the
    image is not larger than that (it is never upscaled)."""
    short = min(width, height)
    if short <= short_side:
        return None
    scale = short_side / short
    if width <= height:
        return short_side, max(1, round(height * scale))
    return max(1, round(width * scale)), short_side


def prepare_one(job: Job, short_side: int, quality: int, overwrite: bool = False) -> Outcome:
    """Write one output (see the module docstring); never raises for a bad input: returns "bad"."""
    src, dst = Path(job.src), Path(job.dst)
    if dst.exists() and not overwrite:
        return Outcome("done", job.src, 0, dst.stat().st_size)
    bytes_in = src.stat().st_size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(src)
        with img:
            check_size(*img.size, str(src))
            size = target_size(*img.size, short_side)
            if size is None and img.format == "JPEG" and img.mode == "RGB":
                img.load()  # decode it all: a truncated or corrupt file is caught here, not in training
                status, image = "copied", None
            else:
                if size is not None and img.format == "JPEG":
                    img.draft(None, size)  # let libjpeg decode at 1/2, 1/4 or 1/8 scale when still >= size
                image = to_rgb(img)
                if size is not None:
                    image = image.resize(size, Image.Resampling.BICUBIC)
                status = "resized" if size is not None else "converted"
    except (*UNREADABLE, Image.DecompressionBombWarning, DataError) as e:
        return Outcome("bad", job.src, bytes_in, 0, str(e) or type(e).__name__)

    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(f".{dst.name}.{os.getpid()}.part")  # not an image extension: ImageFolder ignores it
    try:
        if image is None:
            shutil.copyfile(src, part)
        else:
            image.save(part, format="JPEG", quality=quality)
        os.replace(part, dst)  # atomic: dst is either absent or complete
    finally:
        part.unlink(missing_ok=True)
    return Outcome(status, job.src, bytes_in, dst.stat().st_size)


def _prepare_one(args: tuple[Job, int, int, bool]) -> Outcome:
    return prepare_one(*args)


def _outcomes(jobs: list[Job], cfg: PrepareConfig) -> Iterator[Outcome]:
    tasks = [(job, cfg.short_side, cfg.quality, cfg.overwrite) for job in jobs]
    workers = cfg.workers if cfg.workers is not None else _cpu_count()
    if workers <= 1:
        yield from map(_prepare_one, tasks)
        return
    chunk = max(1, min(64, len(tasks) // (workers * 8)))
    with multiprocessing.Pool(workers) as pool:  # leaving the block early (an error, Ctrl-C) terminates it
        yield from pool.imap_unordered(_prepare_one, tasks, chunksize=chunk)


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


PART = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.part$")


def remove_stale_parts(jobs: list[Job]) -> int:
    """Delete the temporary files (``.NAME.PID.part``) that interrupted runs left beside these
    jobs' outputs; nothing else is touched. Returns how many."""
    outputs: dict[Path, set[str]] = {}
    for job in jobs:
        out = Path(job.dst)
        outputs.setdefault(out.parent, set()).add(out.name)
    removed = 0
    for folder, names in outputs.items():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            match = PART.match(entry.name)
            if match and match["name"] in names and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed += 1
    return removed


def check_settings(cfg: PrepareConfig, dst: Path) -> None:
    """Refuse to add to a copy made with another size or quality (unless overwriting it); record them."""
    mine = {"short_side": cfg.short_side, "quality": cfg.quality}
    recorded = next((p for p in (dst / SETTINGS, dst / REPORT) if p.exists()), None)
    if recorded is not None and not cfg.overwrite:
        saved = json.loads(recorded.read_text())
        theirs = saved if recorded.name == SETTINGS else {k: saved["settings"][k] for k in mine}
        changed = [f"{k} {theirs.get(k)} there, {v} now" for k, v in mine.items() if theirs.get(k) != v]
        if changed:
            raise ConfigError(
                f"{dst} holds a copy made with other settings ({'; '.join(changed)}); give the same "
                "settings to continue it, --overwrite to rewrite every image, or another DST"
            )
    atomic_write_json(dst / SETTINGS, mine)


def prepare(cfg: PrepareConfig, progress: bool = True) -> dict[str, Any]:
    """Write the pre-resized copy of ``cfg.src`` into ``cfg.dst``; returns the summary it also
    writes to DST/prepare_report.json (counts, bytes, bad files, the projection for ImageNet-1K)."""
    cfg.validate()
    start = time.perf_counter()
    src, dst = Path(cfg.src).expanduser(), Path(cfg.dst).expanduser()
    jobs, not_files = find_jobs(src, dst)
    if not jobs:
        raise DataError(f"no image files under {src} (looked for {', '.join(IMG_EXTENSIONS)})")
    with FolderLock(dst, "DST"):
        check_settings(cfg, dst)
        remove_stale_parts(jobs)
        summary = _prepare_all(cfg, jobs, progress)
        summary.update(
            src=str(src),
            dst=str(dst),
            not_files=len(not_files),
            not_files_list=not_files,
            seconds=round(time.perf_counter() - start, 2),
        )
        atomic_write_json(dst / REPORT, summary)
    return summary


def _prepare_all(cfg: PrepareConfig, jobs: list[Job], progress: bool) -> dict[str, Any]:
    """Prepare every job (in parallel); the summary of what happened."""
    counts: Counter[str] = Counter()
    bytes_in = bytes_out = bytes_done = 0
    bad: list[dict[str, str]] = []
    bar = tqdm(total=len(jobs), desc="prepare", unit="img", disable=not progress, dynamic_ncols=True)
    with bar, contextlib.closing(_outcomes(jobs, cfg)) as outcomes:  # closing the generator stops the workers
        for outcome in outcomes:
            counts[outcome.status] += 1
            if outcome.status == "bad" and not cfg.skip_bad_images:
                raise DataError(
                    f"cannot read image {outcome.src}: {outcome.error}. Remove it, or pass --skip-bad-images "
                    f"to skip it (the images written so far are kept; run again to continue)"
                )
            if outcome.status == "bad":
                bad.append({"path": outcome.src, "error": outcome.error})
            elif outcome.status == "done":
                bytes_done += outcome.bytes_out
            else:
                bytes_in, bytes_out = bytes_in + outcome.bytes_in, bytes_out + outcome.bytes_out
            bar.update(1)
            if outcome.status == "bad" or bar.n % 256 == 0:
                bar.set_postfix(written=sum(counts[s] for s in WRITTEN), done=counts["done"], bad=counts["bad"])

    prepared = len(jobs) - len(bad)
    mean_bytes = (bytes_out + bytes_done) / max(1, prepared)
    return {
        "settings": asdict(cfg),
        "images": len(jobs),
        "written": sum(counts[s] for s in WRITTEN),
        **{s: counts[s] for s in WRITTEN},
        "skipped_done": counts["done"],
        "bad": len(bad),
        "bytes_in": bytes_in,  # inputs of the images written by this run
        "bytes_out": bytes_out,  # outputs written by this run
        "dst_bytes": bytes_out + bytes_done,  # all prepared images in DST
        "mean_bytes_per_image": round(mean_bytes),
        "projected_imagenet_1k_bytes": round(mean_bytes * IMAGENET_1K_IMAGES),
        "bad_files": bad,
    }


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # unreachable


def summary_text(summary: dict[str, Any]) -> str:
    """The summary of :func:`prepare` in a few lines, for people."""
    bad = f", {summary['bad']} bad (listed in {Path(summary['dst']) / REPORT})" if summary["bad"] else ""
    if summary.get("not_files"):
        bad += f", {summary['not_files']} not regular files (FIFOs, sockets, broken links) skipped"
    return "\n".join(
        [
            f"prepared {summary['dst']}: {summary['written']} images written ({summary['resized']} resized, "
            f"{summary['copied']} copied as they were, {summary['converted']} converted to RGB JPEG), "
            f"{summary['skipped_done']} already done{bad}, in {summary['seconds']:.0f} s",
            f"bytes: {_size(summary['bytes_in'])} read -> {_size(summary['bytes_out'])} written; DST holds "
            f"{_size(summary['dst_bytes'])} of images, {_size(summary['mean_bytes_per_image'])} per image on average",
            f"projected size of ImageNet-1K ({IMAGENET_1K_IMAGES:,} images) at this average: "
            f"{_size(summary['projected_imagenet_1k_bytes'])} (meaningful only if these are real photos)",
        ]
    )
