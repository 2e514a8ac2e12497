"""Lesson 07: judging an encoder by training a classifier on it, on the same loop as pretraining.

Fine-tuning, linear probing and segmentation (a classifier of pixels) are one job,
:func:`train_classifier`, given a :class:`Recipe`: the data, what the classifier is, which
optimizer and loss train it, how it is measured (:mod:`~mae_course.evaluation.finetune`,
:mod:`~mae_course.evaluation.linprobe`, :mod:`~mae_course.evaluation.segment`). The job reads
like pretraining: set-up, resume, epochs (each followed by a validation), finish.

Without ``checkpoint`` the same classifier starts from random weights: the from-scratch baseline
(and, for linear probing, the random-encoder baseline).

Every run writes ``log.jsonl``, ``checkpoint-last.pth`` (resumable), ``model.safetensors`` and a final
``metrics.json`` with the recipe's metrics (top-1/top-5 accuracy for images), wall time,
settings, data and hardware. One progress bar follows the whole run; it shows the latest
validation, and ``log.jsonl`` holds every epoch's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.data import Dataset, DistributedSampler, Subset

from ..checkpoint import load_checkpoint, state_dict_of
from ..config import NOT_COMPARED, DataOptions, OptimOptions, RunOptions, check_types, need, option
from ..data.batches import TrainingLoader, make_loader
from ..data.datasets import (
    check_classification_splits,
    eval_crop_fraction,
    loader_workers,
    make_dataset,
    skipped_images,
)
from ..data.transforms import eval_transform
from ..errors import CheckpointError, ConfigError
from ..lesson import runs_quietly
from ..model.registry import DEFAULT_MODEL, MODEL_CONFIGS, check_architecture, check_model_settings
from ..model.vit import POOLINGS, encoder_settings
from ..provenance import device_name
from ..safe_files import atomic_write_json
from ..train.distributed import Runtime, barrier, init_runtime, shutdown
from ..train.engine import epoch_indices, progress_bar, train_one_epoch
from ..train.recipe import Schedule
from ..train.run import METRICS, Run, final_model
from ..train.step import autocast_for, make_train_step
from ..train.step_plan import step_plan
from .metrics import measure_accuracy, shard


@dataclass
class ClassifyConfig(RunOptions, OptimOptions, DataOptions):
    """Settings shared by fine-tuning and linear probing."""

    output_dir: str = "runs/classify"
    checkpoint: str | None = option(
        None, "an MAE checkpoint (the course's or a released one); none: random initialisation", group="encoder"
    )
    model: str | None = option(
        None,
        "architecture, for checkpoints without a config or no checkpoint (default: mae_vit_mini_patch4_32)",
        group="encoder",
        choices=tuple(MODEL_CONFIGS),
    )
    model_overrides: dict[str, Any] = option(
        {},
        "constructor overrides of a random start, e.g. '{\"embed_dim\": 64}' (a checkpoint brings its own)",
        group="encoder",
        metavar="JSON",
    )
    global_pool: str = option(
        "avg", "features: the cls token or the average of the patch tokens", group="encoder", choices=POOLINGS
    )
    val_subset: int | None = option(None, "evaluate on the first N validation images only", group="data")
    val_every: int = option(1, "epochs between validations (the last epoch is always validated)", group="run")
    warmup_epochs: float | None = option(
        None,
        "epochs of linear lr warmup (default: warmup_fraction x epochs, the recipe's share of the run)",
        group="optimization",
    )
    warmup_fraction: float = option(
        0.1, "the warmup as a share of the epochs, when warmup_epochs is not given", cli=False
    )
    batch_size: int = 128
    blr: float = 1e-3
    min_lr: float = 1e-6
    log_every: int = 20

    kind = "classify"  # the job: "finetune" or "linprobe" (a class constant, not a setting)

    def validate(self) -> None:
        check_types(self, self.kind)
        self.validate_data()
        self.validate_optim()
        self.validate_run()
        need(
            self.val_subset is None or self.val_subset >= 1,
            f"val subset must be at least 1 image, got {self.val_subset}",
        )
        need(self.val_every >= 1, f"val every must be at least 1 epoch, got {self.val_every}")
        need(0 <= self.warmup_fraction <= 1, f"warmup fraction must be in [0, 1], got {self.warmup_fraction}")
        if self.checkpoint is not None and not Path(self.checkpoint).expanduser().is_file():
            raise FileNotFoundError(f"checkpoint not found: {self.checkpoint}")
        if self.model_overrides:
            need(
                self.checkpoint is None,
                "model overrides shape a random start; a checkpoint brings its own architecture",
            )
            check_model_settings(self.model or DEFAULT_MODEL, {"img_size": self.image_size, **self.model_overrides})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def warmup(self) -> float:
        """Warmup epochs: as set, or the recipe's share of the run."""
        return self.warmup_epochs if self.warmup_epochs is not None else self.warmup_fraction * self.epochs


class ClassifierInputs(NamedTuple):
    """What one run trains and validates on, as a recipe's ``inputs`` returns it."""

    train: Dataset  # what the sampler draws from: the images, or their cached features
    val: Dataset  # this process's share of the validation set, in the same form
    trained: nn.Module  # what the optimizer steps: the whole model, or the head alone
    predict: Callable[[torch.Tensor], torch.Tensor]  # a batch of val inputs -> logits


def image_inputs(
    cfg: Any, model: nn.Module, train_set: Dataset, val_set: Dataset, rt: Runtime, workers: int
) -> ClassifierInputs:
    """The images themselves: every process trains on its share of the training set (through
    the sampler) and validates on its share of the validation set, with the whole model."""
    return ClassifierInputs(train_set, shard(val_set, rt.rank, rt.world_size), model, model)


def top_k_accuracy(
    predict: Callable, batches: Iterator, device: torch.device, autocast: Callable, classes: int
) -> dict[str, float]:
    """Image classification's measure: top-1 / top-5 accuracy and the loss (every class count alike)."""
    return measure_accuracy(predict, batches, device, autocast)


@dataclass(frozen=True)
class Recipe:
    """What makes fine-tuning, linear probing and segmentation differ; the rest of the job is the same.

    Each field is a plain function of the recipe's own module (``finetune.optimizer`` builds
    fine-tuning's AdamW, ``linprobe.optimizer`` the probe's LARS).
    """

    datasets: Callable[[Any], tuple[Dataset, Dataset, int]]  # cfg -> (train set, val set, classes)
    build: Callable[[Any, dict, dict | None, int], nn.Module]  # (cfg, encoder config, its weights, classes) -> model
    optimizer: Callable[[Any, nn.Module, float], torch.optim.Optimizer]  # (cfg, model, peak lr)
    loss: Callable[[Any, int], Callable[..., torch.Tensor]]  # (cfg, classes) -> loss_fn(module, inputs, targets)
    inputs: Callable[..., ClassifierInputs] = image_inputs  # (cfg, model, train set, val set, runtime, workers)
    # (predict, batches, device, autocast, classes) -> metrics with "loss"; every process sees its own share
    measure: Callable[..., dict[str, float]] = top_k_accuracy
    primary: str = "top1"  # the metric the run's best is tracked by
    shown: tuple[str, ...] = ("top1", "top5")  # the metrics the progress bar shows (in %)


def classification_sets(cfg: Any, train_transform: Callable) -> tuple[Dataset, Dataset, int]:
    """An image-classification dataset's train and val splits, checked to share their classes."""
    train = make_dataset(
        cfg.data, "train", train_transform, cfg.image_size, cfg.data_root, cfg.download, cfg.skip_bad_images
    )
    val = make_dataset(
        cfg.data,
        "val",
        eval_transform(cfg.image_size, eval_crop(cfg)),
        cfg.image_size,
        cfg.data_root,
        cfg.download,
        cfg.skip_bad_images,
    )
    return train, val, check_classification_splits(train, val, cfg.data)


def encoder_source(cfg: ClassifyConfig) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """(the MAE config of the encoder, its weights or None for a random start)."""
    if cfg.checkpoint is None:
        return {**MODEL_CONFIGS[cfg.model or DEFAULT_MODEL], **cfg.model_overrides, "img_size": cfg.image_size}, None
    ckpt = load_checkpoint(cfg.checkpoint)
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    saved = config.get("model") or config.get("classifier")  # an MAE's encoder, or a classifier's
    if saved is None:
        if cfg.model is None:
            raise CheckpointError(
                f"{cfg.checkpoint} carries no model config (a released MAE file?); name its architecture with --model"
            )
        saved = MODEL_CONFIGS[cfg.model]
    if not isinstance(saved, dict):
        raise CheckpointError(f"{cfg.checkpoint} holds a model config that is not a dictionary of settings")
    config = {**saved, "img_size": cfg.image_size}
    try:  # a crafted config (depth 10^9, a width of 2^40) is refused before the classifier is built
        check_architecture(encoder_settings(config))
    except ConfigError as e:
        raise CheckpointError(f"{cfg.checkpoint} holds a model config that does not build ({e})") from None
    return config, state_dict_of(ckpt)


def eval_crop(cfg: ClassifyConfig) -> float:
    return eval_crop_fraction(cfg.data, cfg.image_size)


def train_classifier(cfg: ClassifyConfig, recipe: Recipe, on_step: Callable[[int, float], None] | None = None) -> dict:
    """Train (or resume) a classifier by ``recipe``; returns the final metrics (also in metrics.json)."""
    cfg.validate()
    rt = init_runtime(cfg.device)
    try:
        return _train(cfg, recipe, rt, on_step)
    finally:
        shutdown()


def _train(cfg: ClassifyConfig, recipe: Recipe, rt: Runtime, on_step) -> dict:
    # ---- set-up: everything is built and checked before anything is written
    run = Run(cfg.output_dir, cfg.resume, cfg.overwrite, rt, kind=cfg.kind)
    torch.manual_seed(cfg.seed + rt.rank)
    encoder_config, weights = encoder_source(cfg)
    train_set, val_set, classes = recipe.datasets(cfg)
    if cfg.subset is not None:
        train_set = Subset(train_set, range(min(cfg.subset, len(train_set))))
    if cfg.val_subset is not None:
        val_set = Subset(val_set, range(min(cfg.val_subset, len(val_set))))
    try:
        model = recipe.build(cfg, encoder_config, weights, classes).to(rt.device)
    except (TypeError, ValueError) as e:
        if isinstance(e, CheckpointError | ConfigError):
            raise
        raise ConfigError(f"cannot build the classifier: {e}") from None
    schedule = Schedule.plan(
        len(train_set),
        cfg.batch_size,
        cfg.accum_iter,
        rt.world_size,
        cfg.epochs,
        cfg.warmup,
        cfg.blr,
        cfg.lr,
        cfg.min_lr,
        what="the training set",
    )
    optimizer = recipe.optimizer(cfg, model, schedule.peak_lr)
    autocast, _ = autocast_for(rt.device, cfg.amp)
    workers = loader_workers(cfg.data, cfg.num_workers, announce=rt.is_main)
    plan = step_plan(schedule.steps_per_epoch, cfg.batch_size, cfg.accum_iter, rt.world_size)
    settings = {"classifier": model.config, cfg.kind: cfg.to_json(), "plan": plan}
    best_key = f"best_{recipe.primary}"
    best, saved = 0.0, {}

    with run:
        # ---- resume
        if run.resuming:
            saved = run.restore(model, optimizer, None, cfg.to_json(), NOT_COMPARED | {"val_every"}, cfg.seed, plan)
            best = float(saved.get(best_key, 0.0))
        first_step = run.progress.step
        if run.progress.epoch >= cfg.epochs and (run.out / METRICS).exists() and final_model(run.out).exists():
            if rt.is_main:
                print(f"{run.out} had already finished all {cfg.epochs} epochs; nothing to do")
            return json.loads((run.out / METRICS).read_text())
        run.write_config(settings)

        started = time.perf_counter()
        data = recipe.inputs(cfg, model, train_set, val_set, rt, workers)
        if run.progress.epoch < cfg.epochs:  # the cached features' time is part of the training
            run.progress.seconds += time.perf_counter() - started
        sampler = DistributedSampler(data.train, rt.world_size, rt.rank, shuffle=True, seed=cfg.seed, drop_last=True)
        step = make_train_step(
            data.trained,
            optimizer,
            loss_fn=recipe.loss(cfg, classes),
            amp=cfg.amp,
            distributed=rt.distributed,
            accum_iter=cfg.accum_iter,
        )
        if step.scaler is not None and saved.get("scaler"):  # fp16: the loss scale the run had reached
            step.scaler.load_state_dict(saved["scaler"])
        tensor_inputs = isinstance(data.train, torch.utils.data.TensorDataset)

        training = TrainingLoader(
            data.train, cfg.batch_size, rt.device, 0 if tensor_inputs else workers, cfg.seed, rt.rank
        )

        def on_device(loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            return ((x.to(rt.device, non_blocking=True), y.to(rt.device, non_blocking=True)) for x, y in loader)

        def validate() -> dict[str, float]:
            model.eval()
            loader = make_loader(data.val, max(256, cfg.batch_size), rt.device, 0 if tensor_inputs else workers)
            return recipe.measure(data.predict, on_device(loader), rt.device, autocast, classes)

        quiet = runs_quietly()
        if rt.is_main and not quiet:
            frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
            tuned = sum(p.numel() for p in model.parameters() if p.requires_grad)
            start = cfg.checkpoint or "random initialisation"
            print(
                f"{cfg.kind}: {model.config.get('depth', '?')}-block ViT from {start} on {cfg.data} "
                f"({len(data.train)} train / {len(val_set)} val images, {classes} classes), "
                f"{tuned / 1e6:.2f}M trained and {frozen / 1e6:.2f}M frozen parameters, {cfg.epochs} epochs x "
                f"{schedule.steps_per_epoch} steps, effective batch {schedule.effective_batch}, "
                f"lr {schedule.peak_lr:.3g}, on {rt.device}"
            )

        # ---- the epochs, each followed by a validation (every val_every epochs)
        metrics: dict[str, float] = {}
        with progress_bar(schedule, run, cfg.kind, show=rt.is_main and not quiet) as bar:
            while run.progress.epoch < cfg.epochs:
                p = run.progress
                indices = epoch_indices(sampler, p.epoch, skip=p.micro_in_epoch * cfg.batch_size)
                time_before = p.seconds
                loss = train_one_epoch(
                    step,
                    on_device(training.epoch(p.epoch, indices)),
                    schedule,
                    run,
                    images_per_micro=cfg.batch_size * rt.world_size,
                    log_every=cfg.log_every,
                    on_step=on_step,
                    bar=bar,
                )
                if loss is not None:  # the epoch ended (else Ctrl-C stopped it at a step boundary)
                    record = {"epoch": p.epoch + 1, "train_loss": loss}
                    if (p.epoch + 1) % cfg.val_every == 0 or p.epoch + 1 == cfg.epochs:
                        validation_start = time.perf_counter()
                        metrics = validate()
                        p.seconds += time.perf_counter() - validation_start
                        best = max(best, metrics[recipe.primary])
                        record.update({f"val_{k}": v for k, v in metrics.items()})
                        bar.set_postfix({f"val_{k}": f"{metrics[k]:.2f}%" for k in recipe.shown})
                    skipped = skipped_images(train_set) + skipped_images(val_set)
                    record["epoch_time_s"] = p.seconds - time_before
                    run.log.write({**record, "skipped_images": skipped} if skipped else record)
                    run.end_epoch()
                if run.save_due(cfg.save_every, cfg.epochs):
                    run.save(model, optimizer, step.scaler, settings, {best_key: best})
                run.stop_if_requested(cfg.epochs)

        # ---- finish: the final weights and metrics (measured again if a killed run lost them)
        if not metrics:
            metrics = validate()
        summary = {
            "kind": cfg.kind,
            **{k: v for k, v in metrics.items() if k != "loss"},
            "val_loss": metrics["loss"],
            best_key: max(best, metrics[recipe.primary]),
            "epochs": cfg.epochs,
            "wall_time_s": run.progress.seconds,
            "trained_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "data": {
                "name": cfg.data,
                "train_images": len(data.train),
                "val_images": len(val_set),
                "classes": classes,
            },
            "hardware": {"device": device_name(rt.device), "processes": rt.world_size, "torch": torch.__version__},
            "config": cfg.to_json(),
        }
        if rt.is_main:
            if run.progress.step > first_step or not final_model(run.out).exists():
                run.save_final(model, settings)
            atomic_write_json(run.out / METRICS, summary)
            if quiet:
                print(
                    f"{cfg.kind}: {recipe.primary} {summary[recipe.primary]:.1f}% after {cfg.epochs} epochs, "
                    f"{run.progress.seconds / 60:.1f} min ({run.out})"
                )
        barrier()
        return summary
