"""Lesson 09: end-to-end throughput, can the data pipeline feed the model?

    python -m mae_course bench --suite e2e --data /data/imagenet-256      # or --generate 20000

For each data pipeline (``cpu``: workers decode and augment with PIL; ``gpu``: workers read bytes,
the GPU decodes and augments, :mod:`mae_course.data.gpu_pipeline`), it measures in one run:

    loader      images/s delivered to the device, augmented, with no model: the pipeline's ceiling
    training    images/s of real pretraining steps (the trainer's step) fed by that pipeline

next to ``model``: the same step on synthetic images already on the device (the model's ceiling).
A pipeline keeps up when ``training`` is close to ``model``. Without ``--data`` it first writes an
ImageNet-format folder of JPEGs around 500x375 (:mod:`mae_course.data.jpeg_folder`).
Each measurement ends its DataLoader workers before the next one starts.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..data.batches import stream_seed
from ..data.datasets import loader_workers, make_dataset
from ..data.gpu_pipeline import GpuPretrainTransform, device_batches, encoded_dataset, encoded_loader
from ..data.jpeg_folder import make_jpeg_folder
from ..data.transforms import pretrain_transform
from ..errors import ConfigError
from ..model.registry import build_model, check_mask_ratio, check_model_settings
from ..provenance import git_commit, hardware
from ..train.distributed import resolve_device
from ..train.recipe import make_adamw
from ..train.step import make_train_step
from .throughput import time_steps

PIPELINES = ("cpu", "gpu")


@dataclass
class EndToEndConfig:
    data: str | None = None  # an ImageFolder (e.g. prepared with `prepare`); None: generate one
    generate: int = 20_000  # images to write when data is None
    generate_dir: str = "runs/bench/jpegs"
    model: str = "mae_vit_base_patch16"
    image_size: int = 224
    batch_size: int = 256
    pipelines: tuple[str, ...] = PIPELINES
    steps: int = 30  # batches timed per measurement
    warmup: int = 5  # batches first, untimed (worker start-up, compilation)
    num_workers: int | None = None  # None: one per spare core, at most 8
    mask_ratio: float = 0.75
    amp: str = "auto"
    compile: bool = False
    device: str = "auto"
    model_overrides: dict[str, Any] | None = None

    def validate(self) -> None:
        if bad := [p for p in self.pipelines if p not in PIPELINES]:
            raise ConfigError(f"unknown pipeline {bad[0]!r}; choose from {', '.join(PIPELINES)}")
        if self.batch_size < 1 or self.steps < 1 or self.warmup < 0 or self.generate < 1:
            raise ConfigError("batch size, steps and generate must be at least 1, warmup at least 0")
        settings = check_model_settings(self.model, {"img_size": self.image_size, **(self.model_overrides or {})})
        check_mask_ratio(self.mask_ratio, settings)


def pipeline_batches(cfg: EndToEndConfig, pipeline: str, device: torch.device) -> Iterator[torch.Tensor]:
    """Endless (N, 3, S, S) augmented image batches on ``device`` from one pipeline."""
    workers = loader_workers(cfg.data, cfg.num_workers)
    common = dict(
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    if pipeline == "gpu":  # as the trainer runs it: seeded crops, the next batches prepared in a background thread
        loader = encoded_loader(encoded_dataset(cfg.data, "pretrain"), **common)
        transform = GpuPretrainTransform(cfg.image_size)
        epochs = (
            device_batches(loader, transform, device, functools.partial(stream_seed, 0, 0, epoch))
            for epoch in itertools.count()
        )
    else:
        dataset = make_dataset(cfg.data, "pretrain", pretrain_transform(cfg.image_size), cfg.image_size)
        loader = DataLoader(dataset, **common)
        epochs = (((x.to(device, non_blocking=True), y) for x, y in loader) for _ in itertools.count())
    for epoch in epochs:
        for imgs, _ in epoch:
            yield imgs


def images_per_s(batches: Iterator[torch.Tensor], consume, steps: int, warmup: int, device: torch.device) -> float:
    """Images/s over ``steps`` batches after ``warmup``; ``consume(batch)`` is the work done on each.

    ``batches`` is closed at the end, which ends its DataLoader's workers: none outlives its measurement.
    """
    with contextlib.closing(batches):
        return _images_per_s(batches, consume, steps, warmup, device)


def _images_per_s(batches: Iterator[torch.Tensor], consume, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        consume(next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, count = time.perf_counter(), 0
    for _ in range(steps):
        batch = next(batches)
        consume(batch)
        count += len(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def end_to_end(cfg: EndToEndConfig, progress=print) -> dict[str, Any]:
    """Loader-only and training images/s per pipeline, and the model-only rate, in one run."""
    cfg.validate()
    device = resolve_device(cfg.device)
    if cfg.data is None:
        cfg.data = str(make_jpeg_folder(cfg.generate_dir, images=cfg.generate))
    model = build_model(cfg.model, img_size=cfg.image_size, **(cfg.model_overrides or {})).to(device)
    step = make_train_step(
        model, make_adamw(model, lr=1e-4), mask_ratio=cfg.mask_ratio, amp=cfg.amp, compile=cfg.compile
    )
    synthetic = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, device=device)
    model_rate = cfg.batch_size / time_steps(step, synthetic, cfg.steps, cfg.warmup)
    progress(f"model only (synthetic images on the device): {model_rate:.1f} images/s")
    rows = []
    for pipeline in cfg.pipelines:
        loader_rate = images_per_s(
            pipeline_batches(cfg, pipeline, device), lambda b: None, cfg.steps, cfg.warmup, device
        )
        train_rate = images_per_s(
            pipeline_batches(cfg, pipeline, device), lambda b: step(b), cfg.steps, cfg.warmup, device
        )
        rows.append(
            {
                "pipeline": pipeline,
                "loader_images_per_s": loader_rate,
                "training_images_per_s": train_rate,
                "training_vs_model": train_rate / model_rate,
            }
        )
        progress(e2e_row_text(rows[-1]))
    return {
        "suite": "e2e",
        "model_images_per_s": model_rate,
        "rows": rows,
        "data": {"path": cfg.data, "images": len(encoded_dataset(cfg.data, "pretrain"))},
        "settings": asdict(cfg),
        "hardware": hardware(),
        "git_commit": git_commit(),
    }


def e2e_row_text(row: dict[str, Any]) -> str:
    return (
        f"{row['pipeline']:>4} pipeline: loader {row['loader_images_per_s']:9.1f} img/s, training "
        f"{row['training_images_per_s']:9.1f} img/s ({row['training_vs_model'] * 100:5.1f}% of model-only)"
    )


def e2e_text(results: dict[str, Any]) -> str:
    settings = results["settings"]
    lines = [
        f"{settings['model']}, batch {settings['batch_size']}, on {results['hardware']['device']}, "
        f"{results['data']['images']} images",
        f"model only: {results['model_images_per_s']:.1f} img/s",
    ]
    return "\n".join(lines + [e2e_row_text(row) for row in results["rows"]])
