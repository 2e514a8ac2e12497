"""Judging an encoder by training a classifier on it: fine-tuning and linear probing.

The paper measures a pretrained encoder three ways, all built here on one trainer:

* **end-to-end fine-tuning** (:class:`FinetuneConfig`): every weight trains, with AdamW,
  layer-wise lr decay, drop path, RandAugment, mixup/cutmix, label smoothing, random erasing;
* **partial fine-tuning** (``tune_blocks=k`` or ``tune_mlp_only``): only the last k blocks (or
  the MLP of the last block) and the head train, the rest stays frozen (Figure 9);
* **linear probing** (:class:`LinprobeConfig`): the encoder is frozen; BatchNorm without affine
  parameters and a linear layer train with LARS. Frozen features may be computed once and
  cached, which gives exactly the same training when the probe uses no augmentation.

Without ``checkpoint`` the same classifier starts from random weights: the from-scratch
baseline (and, for linear probing, the random-encoder baseline).

Every run writes ``log.jsonl``, ``checkpoint-last.pth`` (resumable), ``model.pth`` and a final
``metrics.json`` with top-1/top-5 accuracy, wall time, config, data and hardware.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset, TensorDataset
from torchvision.transforms import InterpolationMode, v2
from tqdm.auto import tqdm

from .checkpoint import atomic_save, load_checkpoint, load_weights, state_dict_of
from .datasets import BUILTIN, default_workers, make_dataset, num_classes, skipped_images
from .distributed import Runtime, barrier, init_runtime, mean_across_ranks, shutdown
from .errors import CheckpointError, ConfigError, NonFiniteLossError
from .lars import LARS
from .optim import layer_decay_groups
from .registry import MODEL_CONFIGS
from .schedule import lr_at
from .training import (
    AMP_MODES,
    CHECKPOINT,
    RESUMABLE,
    JsonLog,
    SkipFirst,
    StepPlan,
    autocast_for,
    changed_settings,
    check_run_dir,
    gather_rng,
    restore_rng,
    set_lr,
    start_run_dir,
)
from .transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from .vit import POOLINGS, load_mae_encoder, vit_from_mae

FINAL_MODEL, METRICS = "model.pth", "metrics.json"
NATIVE_SIZE = {BUILTIN: None, "cifar10": 32}  # datasets evaluated without the 256/224 center crop


# ============================================================================ settings


@dataclass
class ClassifyConfig:
    """Settings shared by fine-tuning and linear probing."""

    output_dir: str = "runs/classify"
    checkpoint: str | None = None  # an MAE checkpoint (course or official); None: random initialisation
    model: str | None = None  # the architecture when the checkpoint has no config, or without one
    data: str = BUILTIN
    data_root: str | None = None
    download: bool = False
    skip_bad_images: bool = False
    image_size: int = 32
    subset: int | None = None  # train on the first N images only
    val_subset: int | None = None  # evaluate on the first N validation images only (quick runs)
    global_pool: str = "avg"
    epochs: int = 10
    warmup_epochs: float | None = None  # None: the recipe's share of the run (warmup_fraction x epochs)
    batch_size: int = 128
    accum_iter: int = 1
    blr: float = 1e-3
    lr: float | None = None
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    num_workers: int | None = None
    log_every: int = 20
    save_every: int = 1
    resume: str | None = None
    overwrite: bool = False

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(
            self.model is None or self.model in MODEL_CONFIGS,
            f"unknown model {self.model!r}; choose one of {', '.join(MODEL_CONFIGS)}",
        )
        need(self.image_size > 0, f"image size must be positive, got {self.image_size}")
        need(
            self.global_pool in POOLINGS,
            f"unknown global pool {self.global_pool!r}; choose one of {', '.join(POOLINGS)}",
        )
        need(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}")
        need(
            self.warmup_epochs is None or 0 <= self.warmup_epochs <= self.epochs,
            f"warmup epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}",
        )
        need(self.batch_size >= 1 and self.accum_iter >= 1, "batch size and accum iter must be at least 1")
        need(self.blr > 0 and math.isfinite(self.blr), f"base lr must be a positive number, got {self.blr}")
        need(
            self.lr is None or (self.lr > 0 and math.isfinite(self.lr)), f"lr must be a positive number, got {self.lr}"
        )
        need(self.min_lr >= 0 and self.weight_decay >= 0, "min lr and weight decay must be non-negative")
        need(self.amp in AMP_MODES, f"unknown amp mode {self.amp!r}; choose one of {', '.join(AMP_MODES)}")
        need(self.subset is None or self.subset >= 1, f"subset must be at least 1 image, got {self.subset}")
        need(
            self.val_subset is None or self.val_subset >= 1,
            f"val subset must be at least 1 image, got {self.val_subset}",
        )
        need(self.log_every >= 1 and self.save_every >= 1, "log every and save every must be at least 1")
        if self.checkpoint is not None and not Path(self.checkpoint).expanduser().is_file():
            raise FileNotFoundError(f"checkpoint not found: {self.checkpoint}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    warmup_fraction = 0.1  # the recipe's warmup, as a share of the epochs (a class constant, not a setting)

    @property
    def warmup(self) -> float:
        """Warmup epochs: as set, or the recipe's share of the run."""
        return self.warmup_epochs if self.warmup_epochs is not None else self.warmup_fraction * self.epochs


@dataclass
class FinetuneConfig(ClassifyConfig):
    """End-to-end (or partial) fine-tuning; the paper's recipe, scaled to the built-in data."""

    output_dir: str = "runs/finetune"
    layer_decay: float = 0.75
    drop_path: float = 0.1
    smoothing: float = 0.1
    mixup: float = 0.8  # alpha; 0 turns it off
    cutmix: float = 1.0  # alpha; 0 turns it off
    randaug: int = 9  # RandAugment magnitude (2 ops); 0 turns it off
    reprob: float = 0.25  # random erasing probability
    crop_min_scale: float = 0.08
    tune_blocks: int | None = None  # partial fine-tuning: train only the last k blocks (+ head)
    tune_mlp_only: bool = False  # partial fine-tuning: train only the last block's MLP (+ head)

    def validate(self) -> None:
        super().validate()
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"layer decay must be in (0, 1], got {self.layer_decay}")
        if not (0 <= self.drop_path < 1 and 0 <= self.smoothing < 1 and 0 <= self.reprob <= 1):
            raise ConfigError("drop path and smoothing must be in [0, 1), reprob in [0, 1]")
        if self.mixup < 0 or self.cutmix < 0 or not 0 <= self.randaug <= 30:
            raise ConfigError("mixup and cutmix alphas must be >= 0, randaug magnitude in [0, 30]")
        if self.tune_blocks is not None and self.tune_blocks < 1:
            raise ConfigError(
                "tune_blocks must be at least 1; tuning 0 blocks is linear probing: use `python -m mae_course linprobe`"
            )
        if self.tune_blocks is not None and self.tune_mlp_only:
            raise ConfigError("choose either the last k blocks or the last block's MLP, not both")


@dataclass
class LinprobeConfig(ClassifyConfig):
    """Linear probing: frozen encoder, BatchNorm (no affine) + linear head, LARS."""

    output_dir: str = "runs/linprobe"
    warmup_fraction = 1 / 9  # the paper's 10 of 90 epochs
    # Average pooling: on the built-in data a 40-epoch MAE probes at 38.7% with it and 26.9% with the
    # cls token, which MAE's loss never trains directly (measured); --global-pool token is the other.
    global_pool: str = "avg"
    epochs: int = 90
    batch_size: int = 256
    # LARS scales each step to the weights' norm, so its lr must be large. The paper probes at batch
    # 16384 with base lr 0.1, i.e. lr 6.4; the course keeps that lr at its smaller batch (measured best).
    blr: float = 6.4
    min_lr: float = 0.0
    weight_decay: float = 0.0
    optimizer: str = "lars"  # or "sgd" (momentum 0.9)
    augment: str = "none"  # "crop": RandomResizedCrop + flip, as the paper's probe on ImageNet
    cache_features: bool | None = None  # None: cache when possible (one process, no augmentation)

    def validate(self) -> None:
        super().validate()
        if self.optimizer not in ("lars", "sgd"):
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose lars or sgd")
        if self.augment not in ("none", "crop"):
            raise ConfigError(f"unknown probe augmentation {self.augment!r}; choose none or crop")
        if self.cache_features and self.augment != "none":
            raise ConfigError("cached features cannot be augmented; use --augment none or --no-cache-features")


# ============================================================================ pieces


def probe_head(dim: int, num_classes: int) -> nn.Sequential:
    """The linear probe: BatchNorm without affine parameters (eps 1e-6), then a linear layer.

    The BatchNorm only standardises the frozen features (a fixed, data-driven rescaling),
    so the classifier stays linear; the head starts small (std 0.01, bias 0).
    """
    linear = nn.Linear(dim, num_classes)
    nn.init.trunc_normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), linear)


def finetune_transform(cfg: FinetuneConfig) -> v2.Compose:
    """RandomResizedCrop + flip, RandAugment, normalization, random erasing."""
    steps: list[v2.Transform] = [
        v2.ToImage(),
        v2.RandomResizedCrop(
            cfg.image_size, scale=(cfg.crop_min_scale, 1.0), interpolation=InterpolationMode.BICUBIC, antialias=True
        ),
        v2.RandomHorizontalFlip(),
    ]
    if cfg.randaug:
        steps.append(v2.RandAugment(num_ops=2, magnitude=cfg.randaug))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if cfg.reprob:
        steps.append(v2.RandomErasing(p=cfg.reprob, value=0))
    return v2.Compose(steps)


def probe_transform(cfg: LinprobeConfig) -> v2.Compose:
    if cfg.augment == "none":
        return _eval_transform(cfg)
    return v2.Compose([
        v2.ToImage(),
        v2.RandomResizedCrop(cfg.image_size, interpolation=InterpolationMode.BICUBIC, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])  # fmt: skip


def _eval_transform(cfg: ClassifyConfig) -> v2.Compose:
    native = cfg.data in NATIVE_SIZE and cfg.image_size <= (NATIVE_SIZE[cfg.data] or 64)
    return eval_transform(cfg.image_size, crop_fraction=1.0 if native else 224 / 256)


def accuracy_counts(logits: torch.Tensor, targets: torch.Tensor, topk: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """How many samples have their true class among the k highest logits, for each k."""
    k_max = min(max(topk), logits.shape[1])
    top = logits.topk(k_max, dim=1).indices  # (N, k)
    hit = top == targets[:, None]
    return [hit[:, : min(k, k_max)].any(dim=1).sum() for k in topk]


@torch.no_grad()
def evaluate(
    model: Callable[[torch.Tensor], torch.Tensor],
    loader: DataLoader,
    device: torch.device,
    autocast=contextlib.nullcontext,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy over the loader, summed over all processes."""
    totals = torch.zeros(4, device=device, dtype=torch.float64)  # correct@1, correct@5, loss sum, count
    for inputs, targets in loader:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with autocast():
            logits = model(inputs)
        top1, top5 = accuracy_counts(logits.float(), targets)
        loss = F.cross_entropy(logits.float(), targets, reduction="sum")
        totals += torch.stack(
            [
                top1.double(),
                top5.double(),
                loss.double(),
                torch.tensor(len(targets), device=device, dtype=torch.float64),
            ]
        )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    count = max(totals[3].item(), 1.0)
    return {
        "top1": 100 * totals[0].item() / count,
        "top5": 100 * totals[1].item() / count,
        "loss": totals[2].item() / count,
    }


def _shard(dataset, rank: int, world_size: int):
    """This process's disjoint share of an evaluation set (no padding, so every image counts once)."""
    return dataset if world_size == 1 else Subset(dataset, range(rank, len(dataset), world_size))


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# ============================================================================ the trainer


class ClassifierTrainer:
    """One fine-tuning or linear-probing run. Subclasses say what trains and how."""

    kind = "classify"

    def __init__(self, cfg: ClassifyConfig, rt: Runtime):
        self.cfg, self.rt = cfg, rt
        self.out, self.resume_path = check_run_dir(cfg.output_dir, cfg.resume, cfg.overwrite)
        self.ckpt_path = self.out / CHECKPOINT
        self.log = JsonLog(self.out / "log.jsonl", rt.is_main)
        torch.manual_seed(cfg.seed + rt.rank)
        self.device = rt.device

        self.mae_config, encoder_weights = self._encoder_source()
        self.train_set = make_dataset(
            cfg.data, "train", self.train_transform(), cfg.image_size, cfg.data_root, cfg.download, cfg.skip_bad_images
        )
        self.val_set = make_dataset(
            cfg.data, "val", _eval_transform(cfg), cfg.image_size, cfg.data_root, cfg.download, cfg.skip_bad_images
        )
        self.num_classes = num_classes(self.train_set)
        if cfg.subset is not None:
            self.train_set = Subset(self.train_set, range(min(cfg.subset, len(self.train_set))))
        if cfg.val_subset is not None:
            self.val_set = Subset(self.val_set, range(min(cfg.val_subset, len(self.val_set))))
        try:
            self.model = self.build_model(encoder_weights).to(self.device)
        except (TypeError, ValueError) as e:
            if isinstance(e, CheckpointError):
                raise
            raise ConfigError(f"cannot build the classifier: {e}") from None
        self.autocast, needs_scaler = autocast_for(self.device, cfg.amp)
        self.scaler = torch.amp.GradScaler(self.device.type) if needs_scaler else None
        self.num_workers = cfg.num_workers if cfg.num_workers is not None else default_workers(cfg.data)
        self.prepare_data()

        plan = StepPlan(self.train_inputs, rt.rank, rt.world_size, cfg.seed, cfg.batch_size, cfg.accum_iter,
                        cfg.epochs, cfg.warmup, cfg.blr, cfg.lr, what="the training set")  # fmt: skip
        self.sampler, self.steps_per_epoch, self.effective_batch = (
            plan.sampler,
            plan.steps_per_epoch,
            plan.effective_batch,
        )
        self.total_steps, self.warmup_steps, self.peak_lr = plan.total_steps, plan.warmup_steps, plan.peak_lr
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = self.make_optimizer()
        self.ddp = (
            DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if rt.distributed
            else None
        )
        self.epoch, self.step, self.micro_in_epoch, self.best_top1 = 0, 0, 0, 0.0

    # ---------------------------------------------------------------- hooks
    def train_transform(self) -> Callable:
        raise NotImplementedError

    def build_model(self, encoder_weights: dict[str, torch.Tensor] | None) -> nn.Module:
        raise NotImplementedError

    def make_optimizer(self) -> torch.optim.Optimizer:
        raise NotImplementedError

    def prepare_data(self) -> None:
        """Set ``train_inputs`` / ``val_inputs`` (datasets the loaders read) and ``predict``."""
        self.train_inputs, self.val_inputs = self.train_set, _shard(self.val_set, self.rt.rank, self.rt.world_size)
        self.predict = self.model

    def loss_of(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy((self.ddp or self.predict)(inputs).float(), targets)

    # ---------------------------------------------------------------- set-up
    def _encoder_source(self) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
        """(the MAE config of the encoder, its weights or None for a random start)."""
        cfg = self.cfg
        if cfg.checkpoint is None:
            name = cfg.model or "mae_vit_mini_patch4_32"
            return {**MODEL_CONFIGS[name], "img_size": cfg.image_size}, None
        ckpt = load_checkpoint(cfg.checkpoint)
        saved = ckpt.get("config", {}).get("model") if isinstance(ckpt.get("config"), dict) else None
        if saved is None:
            if cfg.model is None:
                raise CheckpointError(
                    f"{cfg.checkpoint} carries no model config (a released MAE file?); name its architecture with --model"
                )
            saved = MODEL_CONFIGS[cfg.model]
        return {**saved, "img_size": cfg.image_size}, state_dict_of(ckpt)

    def _loader(
        self, dataset, sampler=None, shuffle_seed: int | None = None, batch_size: int | None = None
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size or self.cfg.batch_size,
            sampler=sampler,
            drop_last=sampler is not None,
            num_workers=0 if isinstance(dataset, TensorDataset) else self.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(shuffle_seed if shuffle_seed is not None else self.cfg.seed),
        )

    # ---------------------------------------------------------------- checkpoints
    def save(self) -> None:
        rng = gather_rng(self.rt.distributed)
        if not self.rt.is_main:
            return
        atomic_save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "epoch": self.epoch,
                "step": self.step,
                "micro_in_epoch": self.micro_in_epoch,
                "best_top1": self.best_top1,
                "rng": rng,
                "config": {
                    "classifier": self.model.config if hasattr(self.model, "config") else {},
                    self.kind: self.cfg.to_json(),
                },
            },
            self.ckpt_path,
        )

    def restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        missing = [k for k in RESUMABLE if k not in ckpt]
        if missing:
            raise CheckpointError(f"{path} is not a resumable {self.kind} checkpoint (no {', '.join(missing)})")
        saved_cfg = ckpt.get("config", {}).get(self.kind)
        if saved_cfg is None:
            raise CheckpointError(f"{path} is not a {self.kind} checkpoint")
        changed = changed_settings(
            saved_cfg,
            self.cfg.to_json(),
            {"resume", "overwrite", "output_dir", "num_workers", "log_every", "save_every", "device"},
        )
        if changed and self.rt.is_main:
            print(f"note: resuming with changed settings: {', '.join(changed)}")
        load_weights(self.model, ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step, self.micro_in_epoch = ckpt["epoch"], ckpt["step"], ckpt["micro_in_epoch"]
        self.best_top1 = ckpt.get("best_top1", 0.0)
        restore_rng(ckpt["rng"], self.rt.rank, self.rt.world_size)

    # ---------------------------------------------------------------- training
    @property
    def micro_per_epoch(self) -> int:
        return self.steps_per_epoch * self.cfg.accum_iter

    def train_one_epoch(self, on_step: Callable[[int, float], None] | None = None) -> float:
        cfg, rt = self.cfg, self.rt
        self.model.train()
        self.sampler.set_epoch(self.epoch)
        loader = self._loader(
            self.train_inputs,
            SkipFirst(self.sampler, self.micro_in_epoch * cfg.batch_size),
            shuffle_seed=cfg.seed * 100_003 + self.epoch,
        )
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=self.micro_in_epoch // cfg.accum_iter,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            disable=not rt.is_main,
            dynamic_ncols=True,
        )
        window, window_count, epoch_sum, epoch_count = (
            torch.zeros((), device=self.device),
            0,
            torch.zeros((), device=self.device),
            0,
        )
        window_start = time.perf_counter()
        for micro, (inputs, targets) in enumerate(loader, start=self.micro_in_epoch):
            if micro >= self.micro_per_epoch:
                break
            if micro % cfg.accum_iter == 0:
                lr = lr_at(self.step, self.total_steps, self.warmup_steps, self.peak_lr, cfg.min_lr)
                set_lr(self.optimizer, lr)
            update = (micro + 1) % cfg.accum_iter == 0
            inputs, targets = inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
            sync = contextlib.nullcontext() if update or self.ddp is None else self.ddp.no_sync()
            with sync:
                with self.autocast():
                    loss = self.loss_of(inputs, targets)
                scaled = loss / cfg.accum_iter
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            window += loss.detach()
            epoch_sum += loss.detach()
            window_count += 1
            epoch_count += 1
            if not update:
                continue
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self.micro_in_epoch = micro + 1
            bar.update(1)
            if on_step is not None:
                on_step(self.step, loss.item())
            if self.step % cfg.log_every == 0 or self.micro_in_epoch == self.micro_per_epoch:
                mean = mean_across_ranks(window / window_count).item()
                self._check_finite(mean)
                rate = window_count * cfg.batch_size * rt.world_size / (time.perf_counter() - window_start)
                self.log.write(
                    {
                        "step": self.step,
                        "epoch": self.epoch + self.micro_in_epoch / self.micro_per_epoch,
                        "loss": mean,
                        "lr": lr,
                        "images_per_s": rate,
                    }
                )
                bar.set_postfix(loss=f"{mean:.4f}", lr=f"{lr:.2e}")
                window.zero_()
                window_count, window_start = 0, time.perf_counter()
        bar.close()
        epoch_mean = mean_across_ranks(epoch_sum / max(1, epoch_count)).item()
        self._check_finite(epoch_mean)
        return epoch_mean

    def _check_finite(self, loss: float) -> None:
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"the loss became {loss} by step {self.step} (epoch {self.epoch + 1}); stopped without saving, so the "
                f"last good checkpoint is kept{f' at {self.ckpt_path}' if self.ckpt_path.exists() else ''}. Try a lower --blr"
            )

    def validate_model(self) -> dict[str, float]:
        self.model.eval()
        return evaluate(
            self.predict,
            self._loader(self.val_inputs, batch_size=max(256, self.cfg.batch_size)),
            self.device,
            self.autocast,
        )

    def run(self, on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
        cfg, rt = self.cfg, self.rt
        if rt.is_main:
            start_run_dir(self.out, fresh=self.resume_path is None)
        barrier()
        if self.resume_path is not None:
            self.restore(self.resume_path)
        if rt.is_main:
            frozen = sum(p.numel() for p in self.model.parameters() if not p.requires_grad)
            trained = sum(p.numel() for p in self.trainable)
            source = cfg.checkpoint or "random initialisation"
            print(
                f"{self.kind}: {self.model.config.get('depth', '?')}-block ViT from {source} on {cfg.data} "
                f"({len(self.train_inputs)} train / {len(self.val_set)} val images, {self.num_classes} classes), "
                f"{trained / 1e6:.2f}M trained and {frozen / 1e6:.2f}M frozen parameters, {cfg.epochs} epochs x "
                f"{self.steps_per_epoch} steps, effective batch {self.effective_batch}, lr {self.peak_lr:.3g}, on {self.device}"
            )
        started = time.perf_counter()
        metrics: dict[str, float] = {}
        while self.epoch < cfg.epochs:
            epoch_start = time.perf_counter()
            try:
                train_loss = self.train_one_epoch(on_step)
            except KeyboardInterrupt:
                if not rt.distributed:
                    self.save()
                    print(f"\ninterrupted at step {self.step}; saved {self.ckpt_path}. Continue with --resume")
                raise
            self.epoch, self.micro_in_epoch = self.epoch + 1, 0
            metrics = self.validate_model()
            self.best_top1 = max(self.best_top1, metrics["top1"])
            record = {"epoch": self.epoch, "train_loss": train_loss, "val_top1": metrics["top1"], "val_top5": metrics["top5"],
                      "val_loss": metrics["loss"], "epoch_time_s": time.perf_counter() - epoch_start}  # fmt: skip
            skipped = skipped_images(self.train_set) + skipped_images(self.val_set)
            if skipped:
                record["skipped_images"] = skipped
            self.log.write(record)
            if rt.is_main:
                print(
                    f"epoch {self.epoch}: train loss {train_loss:.4f}, val top-1 {metrics['top1']:.2f}%, top-5 {metrics['top5']:.2f}%"
                )
            if self.epoch % cfg.save_every == 0 or self.epoch == cfg.epochs:
                self.save()
        if not metrics:  # resumed a finished run: measure it again
            metrics = self.validate_model()
        return self._finish(metrics, time.perf_counter() - started)

    def _finish(self, metrics: dict[str, float], seconds: float) -> dict[str, Any]:
        summary = {
            "kind": self.kind,
            "top1": metrics["top1"],
            "top5": metrics["top5"],
            "val_loss": metrics["loss"],
            "best_top1": self.best_top1,
            "epochs": self.cfg.epochs,
            "wall_time_s": seconds,
            "trained_parameters": sum(p.numel() for p in self.trainable),
            "data": {
                "name": self.cfg.data,
                "train_images": len(self.train_inputs),
                "val_images": len(self.val_set),
                "classes": self.num_classes,
            },
            "hardware": {"device": _hardware(self.device), "processes": self.rt.world_size, "torch": torch.__version__},
            "config": self.cfg.to_json(),
        }
        if self.rt.is_main:
            atomic_save(
                {
                    "model": self.model.state_dict(),
                    "config": {"classifier": self.model.config, self.kind: self.cfg.to_json()},
                },
                self.out / FINAL_MODEL,
            )
            (self.out / METRICS).write_text(json.dumps(summary, indent=2) + "\n")
        barrier()
        return summary


class Finetuner(ClassifierTrainer):
    """End-to-end or partial fine-tuning (and, without a checkpoint, training from scratch)."""

    kind = "finetune"

    def train_transform(self) -> Callable:
        return finetune_transform(self.cfg)

    def build_model(self, encoder_weights):
        cfg = self.cfg
        model = vit_from_mae(self.mae_config, self.num_classes, global_pool=cfg.global_pool, drop_path=cfg.drop_path)
        if encoder_weights is not None:
            load_mae_encoder(model, encoder_weights)
        if cfg.tune_blocks is not None or cfg.tune_mlp_only:
            depth = len(model.blocks)
            if cfg.tune_blocks is not None and cfg.tune_blocks > depth:
                raise ConfigError(f"tune_blocks={cfg.tune_blocks}, but the encoder has only {depth} blocks")
            model.requires_grad_(False)
            tuned = (
                [model.blocks[-1].norm2, model.blocks[-1].mlp]
                if cfg.tune_mlp_only
                else list(model.blocks[depth - cfg.tune_blocks :])
            )
            for module in [*tuned, model.head, getattr(model, "norm", None), getattr(model, "fc_norm", None)]:
                if module is not None:
                    module.requires_grad_(True)
        return model

    def make_optimizer(self):
        cfg = self.cfg
        groups = layer_decay_groups(self.model, cfg.weight_decay, cfg.layer_decay)
        return torch.optim.AdamW(groups, lr=self.peak_lr, betas=(0.9, 0.999), fused=self.device.type == "cuda")

    def prepare_data(self) -> None:
        super().prepare_data()
        cfg = self.cfg
        mixers = []
        if cfg.mixup > 0:
            mixers.append(v2.MixUp(alpha=cfg.mixup, num_classes=self.num_classes))
        if cfg.cutmix > 0:
            mixers.append(v2.CutMix(alpha=cfg.cutmix, num_classes=self.num_classes))
        self.mix = v2.RandomChoice(mixers) if mixers else None  # one of the two per batch, as the official switch 0.5

    def loss_of(self, inputs, targets):
        cfg = self.cfg
        if self.mix is not None:
            inputs, soft = self.mix(inputs, targets)
        else:
            soft = F.one_hot(targets, self.num_classes).float()
        soft = soft * (1 - cfg.smoothing) + cfg.smoothing / self.num_classes
        logits = (self.ddp or self.model)(inputs).float()
        return torch.sum(-soft * F.log_softmax(logits, dim=-1), dim=-1).mean()


class LinearProber(ClassifierTrainer):
    """Linear probing on frozen features, with LARS (or SGD)."""

    kind = "linprobe"

    def train_transform(self) -> Callable:
        return probe_transform(self.cfg)

    def build_model(self, encoder_weights):
        model = vit_from_mae(self.mae_config, self.num_classes, global_pool=self.cfg.global_pool)
        if encoder_weights is not None:
            load_mae_encoder(model, encoder_weights)
        model.requires_grad_(False)
        model.head = probe_head(model.num_features, self.num_classes)
        return model

    def make_optimizer(self):
        cfg = self.cfg
        if cfg.optimizer == "lars":
            return LARS(self.trainable, lr=self.peak_lr, weight_decay=cfg.weight_decay)
        return torch.optim.SGD(self.trainable, lr=self.peak_lr, momentum=0.9, weight_decay=cfg.weight_decay)

    def prepare_data(self) -> None:
        cfg = self.cfg
        cache = (
            cfg.cache_features
            if cfg.cache_features is not None
            else (not self.rt.distributed and cfg.augment == "none")
        )
        if cache and self.rt.distributed:
            raise ConfigError("cached features are for a single process; drop --cache-features under torchrun")
        self.cached = bool(cache)
        if not self.cached:
            super().prepare_data()
            self.predict = self._frozen_then_head
            return
        self.model.eval()
        self.train_inputs = self._features(self.train_set, "train")
        self.val_inputs = self._features(self.val_set, "val")
        self.predict = self.model.head

    @torch.no_grad()
    def _features(self, dataset, name: str) -> TensorDataset:
        """The frozen encoder's features of every image, computed once."""
        loader = DataLoader(dataset, batch_size=max(256, self.cfg.batch_size), num_workers=self.num_workers)
        features, labels = [], []
        for imgs, targets in tqdm(
            loader, desc=f"features of the {name} set", disable=not self.rt.is_main, dynamic_ncols=True
        ):
            with self.autocast():
                features.append(self.model.forward_features(imgs.to(self.device)).float())
            labels.append(torch.as_tensor(targets, device=self.device))
        return TensorDataset(torch.cat(features), torch.cat(labels))

    def _frozen_then_head(self, imgs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.model.forward_features(imgs)
        return self.model.head(features.float())

    def loss_of(self, inputs, targets):
        if self.cached:
            logits = self.model.head(inputs)
        else:  # through the DDP wrapper when there is one, so the head's gradients are averaged
            logits = (self.ddp or self.model)(inputs)
        return F.cross_entropy(logits.float(), targets)


def _run(trainer_class, cfg: ClassifyConfig, on_step=None) -> dict[str, Any]:
    cfg.validate()
    runtime = init_runtime(cfg.device)
    try:
        return trainer_class(cfg, runtime).run(on_step)
    finally:
        shutdown()


def finetune(cfg: FinetuneConfig, on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Fine-tune (all blocks, the last k, or the last MLP) or train from scratch; returns the final metrics."""
    return _run(Finetuner, cfg, on_step)


def linprobe(cfg: LinprobeConfig, on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Linear-probe a frozen encoder (or a random one, without a checkpoint); returns the final metrics."""
    return _run(LinearProber, cfg, on_step)
