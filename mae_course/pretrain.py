"""The pretraining job: train an MAE and write checkpoints, a JSON-lines log and figures.

    python -m mae_course pretrain                      # built-in data, CPU-sized model
    torchrun --nproc_per_node 8 -m mae_course pretrain --data /data/imagenet ...

The recipe is the paper's (appendix A.1): AdamW with betas (0.9, 0.95), weight decay 0.05
on weight matrices only, lr = blr x effective batch / 256, per-iteration linear warmup then
cosine decay, random-resized-crop + flip augmentation. The defaults are scaled down so
that a laptop CPU trains a small MAE on the built-in data in a few minutes.

Output folder:
    config.json                  the settings of the run
    log.jsonl                    one JSON object per logged step and per epoch
    checkpoint-last.pth          everything needed to resume (written atomically)
    model.pth                    the final weights and model config, for the lessons
    reconstructions_untrained.png, reconstructions.png, loss.png

Speed, for full-scale GPU runs (:mod:`mae_course.step`; every option gives the same losses,
up to rounding, and the defaults are safe everywhere):
    --amp auto               bf16 autocast on GPUs that have it (fp16 + loss scaler on older ones), none on CPU
    --optimizer-impl auto    AdamW kernel: auto = fused (GPU and CPU); fused, foreach, for-loop
    --compile                torch.compile the model: slow first step, faster after
    --grad-checkpointing     recompute block activations in backward: less memory (ViT-H), ~30% more compute
    --bucket-cap-mb 25       DDP gradient bucket size under torchrun (torch's default)
The step never waits for the GPU: the loss is read back only every --log-every steps (and
checked for NaN then), images are copied from pinned memory without blocking, and gradients
are freed (set to None) rather than zeroed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .checkpoint import atomic_save, load_checkpoint, load_weights
from .datasets import BUILTIN, default_workers, make_dataset, skipped_images
from .distributed import (
    DEFAULT_BUCKET_CAP_MB,
    Runtime,
    barrier,
    grad_disagreement,
    init_runtime,
    mean_across_ranks,
    shutdown,
)
from .errors import CheckpointError, ConfigError, NonFiniteLossError
from .gpu_data import PIPELINES, GpuPretrainTransform, choose_pipeline, collate_encoded, device_batches, encoded_dataset
from .masking import SAMPLINGS, num_kept
from .optim import OPTIMIZER_IMPLS, make_adamw
from .provenance import provenance
from .registry import MODEL_CONFIGS, build_model
from .schedule import lr_at
from .step import make_train_step
from .training import (
    AMP_MODES,
    CHECKPOINT,
    RESUMABLE,
    JsonLog,
    SkipFirst,
    StepPlan,
    changed_settings,
    check_run_dir,
    gather_rng,
    restore_rng,
    save_figure,
    set_lr,
    start_run_dir,
)
from .transforms import AUGMENTATIONS, eval_transform, pretrain_transform
from .visualize import loss_curve_figure, reconstruction_figure

FINAL_MODEL = "model.pth"


@dataclass
class PretrainConfig:
    """Every setting of a pretraining run. The command line maps one flag to each field."""

    output_dir: str = "runs/pretrain"
    data: str = BUILTIN  # "builtin", "cifar10", "stl10", "imagenette" or an ImageFolder path
    data_root: str | None = None  # where named datasets live (default ~/.cache/mae_course/datasets)
    download: bool = False
    skip_bad_images: bool = False  # skip (count, report) unreadable files instead of stopping
    image_size: int = 32
    subset: int | None = None  # train on the first N images only (quick experiments, tests)
    model: str = "mae_vit_mini_patch4_32"
    model_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {"decoder_depth": 1}
    norm_pix_loss: bool = False
    mask_ratio: float = 0.75
    mask_sampling: str = "random"
    mask_token_in_encoder: bool = False
    augment: str = "crop"
    crop_min_scale: float = 0.2
    epochs: int = 10
    warmup_epochs: float = 1.0
    batch_size: int = 64  # per process
    accum_iter: int = 1
    blr: float = 5e-3  # lr = blr x batch / 256; the paper's 1.5e-4 is tuned for 800 epochs at batch 4096
    lr: float | None = None  # absolute lr; overrides blr when set
    min_lr: float = 0.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    seed: int = 0
    device: str = "auto"
    # Speed (mae_course.step): none of these changes the losses beyond rounding.
    amp: str = "auto"  # "auto": bf16 on GPUs that have it, fp16 + loss scaler on older ones, none on CPU
    optimizer_impl: str = "auto"  # AdamW kernel: "auto" (fused on GPU and CPU), "fused", "foreach", "for-loop"
    compile: bool = False  # torch.compile the model for the training step
    grad_checkpointing: bool = False  # recompute block activations in the backward pass: less memory
    bucket_cap_mb: float = DEFAULT_BUCKET_CAP_MB  # DDP gradient all-reduce bucket size (torchrun only)
    data_pipeline: str = (
        "auto"  # "cpu": decode + augment in workers; "gpu": workers read bytes, the GPU decodes (mae_course.gpu_data)
    )
    num_workers: int | None = None  # None: 0 for the in-memory built-in data, else one per spare core (<= 8)
    log_every: int = 10  # optimizer steps between log lines (the loss is read only then)
    save_every: int = 1  # epochs between checkpoints
    vis_images: int = 6
    check_grad_sync: bool = False  # debugging torchrun: check every step that all processes hold the same gradients
    resume: str | None = None  # a checkpoint path, or "auto" for output_dir/checkpoint-last.pth
    overwrite: bool = False

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad setting."""

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(self.model in MODEL_CONFIGS, f"unknown model {self.model!r}; choose one of {', '.join(MODEL_CONFIGS)}")
        patch = self.model_overrides.get("patch_size", MODEL_CONFIGS[self.model]["patch_size"])
        need(self.image_size > 0, f"image size must be positive, got {self.image_size}")
        need(
            self.image_size % patch == 0,
            f"image size {self.image_size} is not divisible by the patch size {patch} of {self.model}; "
            f"use a multiple of {patch}",
        )
        need(0.0 < self.mask_ratio < 1.0, f"mask ratio must be between 0 and 1 (exclusive), got {self.mask_ratio}")
        try:
            num_kept((self.image_size // patch) ** 2, self.mask_ratio)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        need(
            self.mask_sampling in SAMPLINGS,
            f"unknown mask sampling {self.mask_sampling!r}; choose one of {', '.join(SAMPLINGS)}",
        )
        need(
            self.augment in AUGMENTATIONS,
            f"unknown augmentation {self.augment!r}; choose one of {', '.join(AUGMENTATIONS)}",
        )
        need(0.0 < self.crop_min_scale <= 1.0, f"crop min scale must be in (0, 1], got {self.crop_min_scale}")
        need(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}")
        need(
            0 <= self.warmup_epochs <= self.epochs,
            f"warmup epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}",
        )
        need(self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}")
        need(self.accum_iter >= 1, f"accum iter must be at least 1, got {self.accum_iter}")
        need(self.blr > 0 and math.isfinite(self.blr), f"base lr must be a positive number, got {self.blr}")
        need(
            self.lr is None or (self.lr > 0 and math.isfinite(self.lr)), f"lr must be a positive number, got {self.lr}"
        )
        need(self.min_lr >= 0, f"min lr must be non-negative, got {self.min_lr}")
        need(self.weight_decay >= 0, f"weight decay must be non-negative, got {self.weight_decay}")
        need(all(0 <= b < 1 for b in self.betas), f"AdamW betas must be in [0, 1), got {self.betas}")
        need(self.amp in AMP_MODES, f"unknown amp mode {self.amp!r}; choose one of {', '.join(AMP_MODES)}")
        need(
            self.data_pipeline in PIPELINES,
            f"unknown data pipeline {self.data_pipeline!r}; choose one of {', '.join(PIPELINES)}",
        )
        need(
            self.optimizer_impl in OPTIMIZER_IMPLS,
            f"unknown optimizer implementation {self.optimizer_impl!r}; choose one of {', '.join(OPTIMIZER_IMPLS)}",
        )
        need(
            self.bucket_cap_mb > 0 and math.isfinite(self.bucket_cap_mb),
            f"bucket cap must be a positive number of megabytes, got {self.bucket_cap_mb}",
        )
        need(self.subset is None or self.subset >= 1, f"subset must be at least 1 image, got {self.subset}")
        need(self.num_workers is None or self.num_workers >= 0, f"num workers must be >= 0, got {self.num_workers}")
        need(self.log_every >= 1 and self.save_every >= 1, "log every and save every must be at least 1")
        need(self.vis_images >= 0, f"vis images must be >= 0, got {self.vis_images}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def train_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, imgs: torch.Tensor, mask_ratio: float = 0.75
) -> float:
    """One optimization step of MAE pretraining, in its plainest form; returns the loss.

    Forward (mask, encode, decode, loss on removed patches), clear the old gradients,
    backpropagate, update. :class:`Pretrainer` does the same with gradient accumulation,
    mixed precision and several processes (:func:`mae_course.step.make_train_step`), and
    reads the loss back only when it logs.

    Args:
        model: a MaskedAutoencoder in training mode.
        optimizer: e.g. from :func:`mae_course.optim.make_adamw`.
        imgs: (N, C, H, W) normalized images.
    """
    loss, _, _ = model(imgs, mask_ratio=mask_ratio)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


class Pretrainer:
    """One pretraining run: everything it builds, and one method per stage of the loop.

    ``Pretrainer(cfg, runtime).run()`` trains for ``cfg.epochs`` (resuming if asked) and
    returns a summary. Most users call :func:`pretrain` instead.
    """

    def __init__(self, cfg: PretrainConfig, rt: Runtime):
        self.cfg, self.rt = cfg, rt
        self.out, self.resume_path = check_run_dir(cfg.output_dir, cfg.resume, cfg.overwrite)
        self.ckpt_path = self.out / CHECKPOINT
        self.log = JsonLog(self.out / "log.jsonl", rt.is_main)
        torch.manual_seed(cfg.seed + rt.rank)

        try:
            self.model = build_model(
                cfg.model,
                img_size=cfg.image_size,
                norm_pix_loss=cfg.norm_pix_loss,
                mask_sampling=cfg.mask_sampling,
                mask_token_in_encoder=cfg.mask_token_in_encoder,
                **cfg.model_overrides,
            ).to(rt.device)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"cannot build model {cfg.model}: {e}") from None

        self.pipeline = choose_pipeline(cfg.data_pipeline, rt.device, cfg.data, cfg.augment)
        self.gpu_transform = None
        if self.pipeline == "gpu":  # workers read file bytes; decoding and augmentation run on the device
            self.dataset = encoded_dataset(cfg.data, "pretrain", cfg.skip_bad_images)
            self.gpu_transform = GpuPretrainTransform(
                cfg.image_size, (cfg.crop_min_scale, 1.0), skip_bad_images=cfg.skip_bad_images
            )
        else:
            transform = pretrain_transform(cfg.image_size, cfg.augment, (cfg.crop_min_scale, 1.0))
            self.dataset = make_dataset(
                cfg.data, "pretrain", transform, cfg.image_size, cfg.data_root, cfg.download, cfg.skip_bad_images
            )
        if cfg.subset is not None:
            self.dataset = Subset(self.dataset, range(min(cfg.subset, len(self.dataset))))
        plan = StepPlan(self.dataset, rt.rank, rt.world_size, cfg.seed, cfg.batch_size, cfg.accum_iter, cfg.epochs,
                        cfg.warmup_epochs, cfg.blr, cfg.lr)  # fmt: skip
        self.sampler, self.steps_per_epoch, self.effective_batch = (
            plan.sampler,
            plan.steps_per_epoch,
            plan.effective_batch,
        )
        self.total_steps, self.warmup_steps, self.peak_lr = plan.total_steps, plan.warmup_steps, plan.peak_lr
        self.optimizer = make_adamw(self.model, self.peak_lr, cfg.weight_decay, cfg.betas, impl=cfg.optimizer_impl)
        self.train_step = make_train_step(
            self.model, self.optimizer, amp=cfg.amp, compile=cfg.compile, grad_checkpointing=cfg.grad_checkpointing,
            distributed=rt.distributed, bucket_cap_mb=cfg.bucket_cap_mb, accum_iter=cfg.accum_iter,
        )  # fmt: skip
        self.scaler = self.train_step.scaler  # fp16 only; saved with the checkpoints
        self.num_workers = cfg.num_workers if cfg.num_workers is not None else default_workers(cfg.data)

        # Where the run stands: epochs done, optimizer steps done, micro-batches done in the epoch.
        self.epoch, self.step, self.micro_in_epoch = 0, 0, 0
        self.grad_sync_diff = 0.0  # with check_grad_sync: the largest gradient difference between processes
        self.vis_batch = self._visualisation_batch()

    # ------------------------------------------------------------------ state
    def _visualisation_batch(self) -> torch.Tensor | None:
        """A fixed batch of held-out images, so the figures of successive epochs compare."""
        if not (self.rt.is_main and self.cfg.vis_images):
            return None
        crop = 1.0 if self.cfg.data == BUILTIN else 224 / 256
        cfg = self.cfg
        images = make_dataset(cfg.data, "val", eval_transform(cfg.image_size, crop), cfg.image_size, cfg.data_root)
        count = min(self.cfg.vis_images, len(images))
        return torch.stack([images[i][0] for i in range(count)]).to(self.rt.device)

    def save(self) -> None:
        """Write a resumable checkpoint (atomically) and the current reconstruction figure."""
        rng = gather_rng(self.rt.distributed)  # every rank's generators, so each resumes its own stream
        if not self.rt.is_main:
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "step": self.step,
            "micro_in_epoch": self.micro_in_epoch,
            "rng": rng,
            "config": {"model": self.model.config, "pretrain": self.cfg.to_json()},
        }
        atomic_save(state, self.ckpt_path)
        self.figure(
            "reconstructions.png",
            f"epoch {self.epoch + self.micro_in_epoch / self.micro_per_epoch:.2f}, step {self.step}",
        )

    def restore(self, path: Path) -> None:
        """Load a checkpoint written by :meth:`save`: weights, optimizer, scaler, position, RNG."""
        ckpt = load_checkpoint(path)
        saved = ckpt.get("config", {}).get("model")
        if saved is not None and saved != self.model.config:
            changed = sorted(k for k in set(saved) | set(self.model.config) if saved.get(k) != self.model.config.get(k))
            raise CheckpointError(
                f"{path} was trained with other model settings ({', '.join(changed)} differ); "
                "resume with the same --model and model flags"
            )
        missing = [k for k in RESUMABLE if k not in ckpt]
        if missing:
            raise CheckpointError(f"{path} is not a resumable training checkpoint (no {', '.join(missing)})")
        self._note_changed_settings(ckpt.get("config", {}).get("pretrain", {}))
        load_weights(self.model, ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step, self.micro_in_epoch = ckpt["epoch"], ckpt["step"], ckpt["micro_in_epoch"]
        restore_rng(ckpt["rng"], self.rt.rank, self.rt.world_size)  # another process count: reseeded

    def _note_changed_settings(self, saved: dict[str, Any]) -> None:
        """Say which training settings differ from the run being resumed (e.g. more epochs)."""
        ignored = {
            "resume",
            "overwrite",
            "output_dir",
            "num_workers",
            "log_every",
            "save_every",
            "vis_images",
            "device",
            "optimizer_impl",
            "compile",
            "grad_checkpointing",
            "bucket_cap_mb",
            "data_pipeline",
        }
        changed = changed_settings(saved, self.cfg.to_json(), ignored)
        if changed and self.rt.is_main:
            print(f"note: resuming with changed settings: {', '.join(changed)}; the lr schedule follows the new ones")

    @property
    def micro_per_epoch(self) -> int:
        return self.steps_per_epoch * self.cfg.accum_iter

    def figure(self, name: str, title: str) -> None:
        if self.vis_batch is not None:
            fig = reconstruction_figure(
                self.model, self.vis_batch, self.cfg.mask_ratio, seed=self.cfg.seed, title=title
            )
            save_figure(fig, self.out / name)

    # ------------------------------------------------------------------ training
    def loader(self) -> DataLoader:
        """This epoch's batches, skipping those already done when resuming mid-epoch."""
        self.sampler.set_epoch(self.epoch)
        return DataLoader(
            self.dataset,
            batch_size=self.cfg.batch_size,
            sampler=SkipFirst(self.sampler, self.micro_in_epoch * self.cfg.batch_size),
            drop_last=True,
            num_workers=self.num_workers,
            pin_memory=self.rt.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.cfg.seed * 100_003 + self.epoch),
            collate_fn=collate_encoded if self.pipeline == "gpu" else None,
        )

    def batches(self):
        """This epoch's (images on the device, labels): decoded and augmented by the workers or by the GPU."""
        if self.gpu_transform is not None:
            return device_batches(self.loader(), self.gpu_transform, self.rt.device)
        return ((imgs.to(self.rt.device, non_blocking=True), labels) for imgs, labels in self.loader())

    def skipped_images(self) -> int:
        """Unreadable images skipped so far, by all processes."""
        mine = self.gpu_transform.skipped if self.gpu_transform is not None else skipped_images(self.dataset)
        return round(mean_across_ranks(torch.tensor(float(mine), device=self.rt.device)).item() * self.rt.world_size)

    def train_one_epoch(self, on_step: Callable[[int, float], None] | None = None) -> float:
        """Train until the end of the current epoch; returns its mean loss (over this process's part)."""
        cfg, rt = self.cfg, self.rt
        self.train_step.module.train()
        bar = tqdm(total=self.steps_per_epoch, initial=self.micro_in_epoch // cfg.accum_iter,
                   desc=f"epoch {self.epoch + 1}/{cfg.epochs}", disable=not rt.is_main, dynamic_ncols=True)  # fmt: skip
        window = _LossWindow(rt.device)
        epoch_total, epoch_count = torch.zeros((), device=rt.device), 0
        start = time.perf_counter()
        for micro, (imgs, _) in enumerate(self.batches(), start=self.micro_in_epoch):
            if micro >= self.micro_per_epoch:
                break  # an incomplete accumulation window at the end
            if micro % cfg.accum_iter == 0:
                lr = lr_at(self.step, self.total_steps, self.warmup_steps, self.peak_lr, cfg.min_lr)
                set_lr(self.optimizer, lr)
            update = (micro + 1) % cfg.accum_iter == 0
            loss = self._forward_backward(imgs, update)
            window.add(loss)  # stays on the device: no host sync until the next log line
            epoch_total += loss
            epoch_count += 1
            if not update:
                continue
            self._optimizer_step()
            self.step += 1
            self.micro_in_epoch = micro + 1
            bar.update(1)
            if on_step is not None:  # tests and notebooks: reads the loss back every step
                on_step(self.step, loss.item())
            if self.step % cfg.log_every == 0 or self.micro_in_epoch == self.micro_per_epoch:
                mean_loss, throughput = window.read(cfg.batch_size * rt.world_size)
                self._check_finite(mean_loss)
                record = {"step": self.step, "epoch": self.epoch + self.micro_in_epoch / self.micro_per_epoch,
                          "loss": mean_loss, "lr": lr, "images_per_s": throughput}  # fmt: skip
                if cfg.check_grad_sync and rt.distributed:
                    record["grad_sync_max_diff"] = self.grad_sync_diff
                self.log.write(record)
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{throughput:.0f}")
        bar.close()
        epoch_mean = mean_across_ranks(epoch_total / max(1, epoch_count)).item()
        self._check_finite(epoch_mean)
        skipped = self.skipped_images() if cfg.skip_bad_images else 0
        if epoch_count:
            record = {"epoch": self.epoch + 1, "train_loss": epoch_mean, "epoch_time_s": time.perf_counter() - start}
            self.log.write({**record, "skipped_images": skipped} if skipped else record)
        if skipped and rt.is_main:
            print(f"note: {skipped} unreadable images skipped so far (each is named in the warnings above)")
        return epoch_mean

    def _forward_backward(self, imgs: torch.Tensor, update: bool) -> torch.Tensor:
        """Loss of one micro-batch and its gradient, scaled for accumulation; (DDP syncs on the last)."""
        return self.train_step.forward_backward(imgs, self.cfg.mask_ratio, sync=update)

    def _optimizer_step(self) -> None:
        if self.cfg.check_grad_sync and self.rt.distributed:  # debugging only: reads every gradient norm back
            self.grad_sync_diff = max(self.grad_sync_diff, grad_disagreement(self.model))
        self.train_step.update()

    def _check_finite(self, loss: float) -> None:
        if not math.isfinite(loss):
            kept = f" at {self.ckpt_path}" if self.ckpt_path.exists() else ""
            raise NonFiniteLossError(
                f"the loss became {loss} by step {self.step} (epoch {self.epoch + 1}); stopped without saving, "
                f"so the last good checkpoint is kept{kept}. Try a lower --blr or a longer warmup"
            )

    def run(self, on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
        cfg, rt = self.cfg, self.rt
        if rt.is_main:
            start_run_dir(self.out, fresh=self.resume_path is None)
        barrier()
        if self.resume_path is not None:
            self.restore(self.resume_path)
            if self.epoch >= cfg.epochs:
                if rt.is_main:
                    print(f"{self.resume_path} has already finished all {cfg.epochs} epochs; nothing to do")
                return {"output_dir": str(self.out), "steps": self.step, "finished_before": True}
        elif rt.is_main:
            self.figure("reconstructions_untrained.png", "untrained model")
        if rt.is_main:
            settings = {"pretrain": cfg.to_json(), "model": self.model.config, **provenance()}
            (self.out / "config.json").write_text(json.dumps(settings, indent=2) + "\n")
            workers = f" x {rt.world_size} processes" if rt.distributed else ""
            print(
                f"pretraining {cfg.model} on {cfg.data} ({len(self.dataset)} images, {cfg.image_size}px) on {rt.device}{workers}: "
                f"{cfg.epochs} epochs x {self.steps_per_epoch} steps, effective batch {self.effective_batch}, "
                f"lr {self.peak_lr:.3g}; writing to {self.out}"
            )
        while self.epoch < cfg.epochs:
            try:
                self.train_one_epoch(on_step)
            except KeyboardInterrupt:
                if not rt.distributed:  # keep the work done so far (multi-process runs keep the last epoch)
                    self.save()
                    print(f"\ninterrupted at step {self.step}; saved {self.ckpt_path}. Continue with --resume")
                raise
            self.epoch, self.micro_in_epoch = self.epoch + 1, 0
            if self.epoch % cfg.save_every == 0 or self.epoch == cfg.epochs:
                self.save()
        return self._finish()

    def _finish(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"output_dir": str(self.out), "steps": self.step}
        if self.rt.is_main:
            weights = {
                "model": self.model.state_dict(),
                "config": {"model": self.model.config, "pretrain": self.cfg.to_json()},
            }
            atomic_save(weights, self.out / FINAL_MODEL)
            records = [r for r in self.log.read() if "step" in r]
            if records:
                save_figure(
                    loss_curve_figure([r["step"] for r in records], [r["loss"] for r in records]), self.out / "loss.png"
                )
                summary.update(first_loss=records[0]["loss"], last_loss=records[-1]["loss"])
            if self.vis_batch is not None:
                summary["figure"] = str(self.out / "reconstructions.png")
        barrier()
        return summary


class _LossWindow:
    """Sums losses on the device and reads them back only when asked (one host sync per log line)."""

    def __init__(self, device: torch.device):
        self.total = torch.zeros((), device=device)
        self.count = 0
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss.detach()
        self.count += 1

    def read(self, images_per_micro_batch: int) -> tuple[float, float]:
        """(mean loss across processes, images per second) since the last read; then resets."""
        mean = mean_across_ranks(self.total / max(1, self.count)).item()
        throughput = self.count * images_per_micro_batch / (time.perf_counter() - self.start)
        self.total.zero_()
        self.count = 0
        self.start = time.perf_counter()
        return mean, throughput


def pretrain(cfg: PretrainConfig, on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a pretraining job; returns a summary (steps, first and last loss, figure path).

    ``on_step(step, loss)`` is called after every optimizer step; it reads the loss from the
    device, so it is meant for tests and notebooks, not for speed.
    """
    cfg.validate()
    runtime = init_runtime(cfg.device)
    try:
        return Pretrainer(cfg, runtime).run(on_step)
    finally:
        shutdown()
