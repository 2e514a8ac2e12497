"""Lesson 05: the pretraining job, ``python -m mae_course pretrain``.

    python -m mae_course pretrain                      # built-in data, CPU-sized model
    torchrun --nproc_per_node 8 -m mae_course pretrain --data /data/imagenet ...

The recipe is the paper's (appendix A.1): AdamW with betas (0.9, 0.95), weight decay 0.05
on weight matrices only, lr = blr x effective batch / 256, per-iteration linear warmup then
cosine decay, random-resized-crop + flip augmentation. The defaults are scaled down so
that a laptop CPU trains a small MAE on the built-in data in a few minutes.

Output folder (see :mod:`mae_course.train.run` for what a run promises):
    config.json, log.jsonl, checkpoint-last.pth
    model.safetensors            the final weights, with the model config, for the lessons
    reconstructions_untrained.png, reconstructions.png, loss.png

Speed, for full-scale GPU runs (:mod:`mae_course.train.step`; every option gives the same
losses, up to rounding, and the defaults are safe everywhere): ``--amp``, ``--optimizer-impl``,
``--compile``, ``--grad-checkpointing``, ``--bucket-cap-mb``, ``--data-pipeline``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.data import DistributedSampler

from ..config import MAX_VIS_IMAGES, NOT_COMPARED, DataOptions, OptimOptions, RunOptions, check_types, need, option
from ..data.batches import PIPELINES, PretrainingImages
from ..data.datasets import loader_workers
from ..data.transforms import AUGMENTATIONS
from ..errors import ConfigError
from ..figures import loss_curve_figure, save_figure
from ..lesson import runs_quietly
from ..model.masking import SAMPLINGS
from ..model.registry import DEFAULT_MODEL, MODEL_CONFIGS, build_model, check_mask_ratio, check_model_settings
from ..seeing.reconstruction import reconstruction_figure
from .distributed import DEFAULT_BUCKET_CAP_MB, barrier, init_runtime, shutdown, sum_across_ranks
from .engine import epoch_indices, progress_bar, train_one_epoch
from .recipe import OPTIMIZER_IMPL_HELP, OPTIMIZER_IMPLS, Schedule, make_adamw
from .run import FINAL_MODEL, Run, final_model
from .step import make_train_step
from .step_plan import step_plan

SPEED = "speed (each option gives the same losses, up to rounding; see also --amp)"
# What a resumed pretraining run may change: config.NOT_COMPARED, the pictures, and the speed options.
PRETRAIN_NOT_COMPARED = NOT_COMPARED | {"vis_images", "compile", "grad_checkpointing", "bucket_cap_mb", "data_pipeline"}


@dataclass
class PretrainConfig(RunOptions, OptimOptions, DataOptions):
    """Every setting of a pretraining run. The command line has one flag per field."""

    output_dir: str = "runs/pretrain"
    model: str = option(DEFAULT_MODEL, "the architecture", group="model", choices=tuple(MODEL_CONFIGS))
    model_overrides: dict[str, Any] = option(
        {}, "constructor overrides, e.g. '{\"decoder_depth\": 1}'", group="model", metavar="JSON"
    )
    norm_pix_loss: bool = option(False, "predict per-patch normalized pixels", group="model", negatable=True)
    mask_ratio: float = option(0.75, "fraction of the patches removed", group="model")
    mask_sampling: str = option(
        "random", "which patches are removed (paper Table 1f)", group="model", choices=SAMPLINGS
    )
    mask_token_in_encoder: bool = option(False, "the 'encoder w/ [M]' baseline (Table 1c)", group="model")
    augment: str = option(
        "crop", "pretraining augmentation (paper Table 1e)", group="augmentation", choices=AUGMENTATIONS
    )
    crop_min_scale: float = option(0.2, "smallest area fraction of RandomResizedCrop", group="augmentation")
    blr: float = 5e-3  # the paper's 1.5e-4 is tuned for 800 epochs at batch 4096: a few CPU minutes learn only colours
    betas: tuple[float, float] = option((0.9, 0.95), "AdamW betas", group="optimization", metavar=("B1", "B2"))
    vis_images: int = option(6, "images in the reconstruction figure")
    check_grad_sync: bool = option(
        False,
        "debugging torchrun: check every step that all processes hold the same gradients (logs grad_sync_max_diff)",
    )
    optimizer_impl: str = option("auto", OPTIMIZER_IMPL_HELP, group=SPEED, choices=OPTIMIZER_IMPLS)
    compile: bool = option(False, "torch.compile the model: a slow first step (compiling), faster after", group=SPEED)
    grad_checkpointing: bool = option(
        False,
        "recompute each block's activations in the backward pass: less activation memory (ViT-H, big batches), "
        "~30%% more compute",
        group=SPEED,
    )
    data_pipeline: str = option(
        "auto",
        "cpu: workers decode and augment; gpu: workers only read the files, the GPU decodes the JPEGs and "
        "augments (ImageFolder data); auto: gpu on CUDA with an ImageFolder, else cpu",
        group=SPEED,
        choices=PIPELINES,
    )
    bucket_cap_mb: float = option(
        DEFAULT_BUCKET_CAP_MB,
        "under torchrun: DDP all-reduces the gradients in buckets of this many MB (torch's default)",
        group=SPEED,
    )

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad setting."""
        check_types(self, "pretrain")
        self.validate_data()
        self.validate_optim()
        self.validate_run()
        flags = {
            "img_size": "--image-size",
            "norm_pix_loss": "--norm-pix-loss",
            "mask_sampling": "--mask-sampling",
            "mask_token_in_encoder": "--mask-token-in-encoder",
        }
        for key in set(flags) & set(self.model_overrides):
            raise ConfigError(f"set {key} with {flags[key]}, not in --model-overrides")
        settings = check_model_settings(self.model, {"img_size": self.image_size, **self.model_overrides})
        check_mask_ratio(self.mask_ratio, settings)
        need(0.0 < self.crop_min_scale <= 1.0, f"crop min scale must be in (0, 1], got {self.crop_min_scale}")
        need(all(0 <= b < 1 for b in self.betas), f"AdamW betas must be in [0, 1), got {self.betas}")
        need(self.bucket_cap_mb > 0, f"bucket cap must be a positive number of megabytes, got {self.bucket_cap_mb}")
        need(
            0 <= self.vis_images <= MAX_VIS_IMAGES,
            f"vis images must be from 0 to {MAX_VIS_IMAGES}, got {self.vis_images}",
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def pretrain(cfg: PretrainConfig, on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a pretraining job; returns a summary (steps, first and last loss, figure path).

    ``on_step(step, loss)`` is called after every optimizer step; it reads the loss from the
    device, so it is meant for tests and notebooks, not for speed. Ctrl-C saves a checkpoint at
    the end of the current step, then raises KeyboardInterrupt.
    """
    cfg.validate()
    rt = init_runtime(cfg.device)
    try:
        # ---- set-up: everything is built and checked before anything is written
        run = Run(cfg.output_dir, cfg.resume, cfg.overwrite, rt, kind="pretrain")
        torch.manual_seed(cfg.seed + rt.rank)
        model = build_model(
            cfg.model,
            img_size=cfg.image_size,
            norm_pix_loss=cfg.norm_pix_loss,
            mask_sampling=cfg.mask_sampling,
            mask_token_in_encoder=cfg.mask_token_in_encoder,
            **cfg.model_overrides,
        ).to(rt.device)
        images = PretrainingImages(
            cfg.data,
            cfg.image_size,
            rt.device,
            cfg.data_pipeline,
            cfg.augment,
            cfg.crop_min_scale,
            cfg.data_root,
            cfg.download,
            cfg.skip_bad_images,
            cfg.subset,
        )
        sampler = DistributedSampler(
            images.dataset, rt.world_size, rt.rank, shuffle=True, seed=cfg.seed, drop_last=True
        )
        schedule = Schedule.plan(
            len(images),
            cfg.batch_size,
            cfg.accum_iter,
            rt.world_size,
            cfg.epochs,
            cfg.warmup_epochs,
            cfg.blr,
            cfg.lr,
            cfg.min_lr,
        )
        optimizer = make_adamw(model, schedule.peak_lr, cfg.weight_decay, cfg.betas, impl=cfg.optimizer_impl)
        step = make_train_step(
            model,
            optimizer,
            mask_ratio=cfg.mask_ratio,
            amp=cfg.amp,
            compile=cfg.compile,
            grad_checkpointing=cfg.grad_checkpointing,
            distributed=rt.distributed,
            bucket_cap_mb=cfg.bucket_cap_mb,
            accum_iter=cfg.accum_iter,
        )
        step.grad_sync_check = cfg.check_grad_sync and rt.distributed
        workers = loader_workers(cfg.data, cfg.num_workers, announce=rt.is_main)
        batches = images.loader(cfg.batch_size, workers, seed=cfg.seed, rank=rt.rank)  # workers start once, for the run
        held_out = images.held_out(cfg.vis_images) if rt.is_main else None
        plan = step_plan(schedule.steps_per_epoch, cfg.batch_size, cfg.accum_iter, rt.world_size)
        settings = {"model": model.config, "pretrain": cfg.to_json(), "plan": plan}

        def figure(name: str, title: str) -> None:
            if held_out is not None:
                save_figure(
                    reconstruction_figure(model, held_out, cfg.mask_ratio, seed=cfg.seed, title=title), run.out / name
                )

        def save() -> None:
            run.save(model, optimizer, step.scaler, settings)
            p = run.progress
            figure(
                "reconstructions.png",
                f"epoch {p.epoch + p.micro_in_epoch / (schedule.steps_per_epoch * cfg.accum_iter):.2f}, step {p.step}",
            )

        with run:
            # ---- resume: weights, optimizer, position and random generators, as they were
            if run.resuming:
                run.restore(model, optimizer, step.scaler, cfg.to_json(), PRETRAIN_NOT_COMPARED, cfg.seed, plan)
            else:
                figure("reconstructions_untrained.png", "untrained model")
            first_step = run.progress.step
            run.write_config(settings)
            quiet = runs_quietly()
            if rt.is_main and not quiet:
                processes = f" x {rt.world_size} processes" if rt.distributed else ""
                print(
                    f"pretraining {cfg.model} on {cfg.data} ({len(images)} images, {cfg.image_size}px) on "
                    f"{rt.device}{processes}: {cfg.epochs} epochs x {schedule.steps_per_epoch} steps, effective batch "
                    f"{schedule.effective_batch}, lr {schedule.peak_lr:.3g}; writing to {run.out}"
                )

            # ---- the epochs (one progress bar for the whole run)
            with progress_bar(schedule, run, "pretrain", show=rt.is_main and not quiet) as bar:
                while run.progress.epoch < cfg.epochs:
                    p = run.progress
                    indices = epoch_indices(sampler, p.epoch, skip=p.micro_in_epoch * cfg.batch_size)
                    time_before = p.seconds
                    loss = train_one_epoch(
                        step,
                        batches.epoch(p.epoch, indices, first=p.micro_in_epoch),
                        schedule,
                        run,
                        images_per_micro=cfg.batch_size * rt.world_size,
                        log_every=cfg.log_every,
                        on_step=on_step,
                        bar=bar,
                    )
                    if loss is not None:  # the epoch ended (else Ctrl-C stopped it at a step boundary)
                        skipped = round(sum_across_ranks(images.skipped(), rt.device)) if cfg.skip_bad_images else 0
                        record = {"epoch": p.epoch + 1, "train_loss": loss, "epoch_time_s": p.seconds - time_before}
                        run.log.write({**record, "skipped_images": skipped} if skipped else record)
                        if skipped and rt.is_main:
                            bar.write(f"note: {skipped} unreadable images skipped so far (each named in the warnings)")
                        run.end_epoch()
                    if run.save_due(cfg.save_every, cfg.epochs):
                        save()
                    run.stop_if_requested(cfg.epochs)

            # ---- finish: write every final file that is missing (a run killed while finishing lost some)
            trained = run.progress.step > first_step
            summary: dict[str, Any] = {"output_dir": str(run.out), "steps": run.progress.step}
            if rt.is_main:
                written = finish(run, model, settings, figure, trained)
                records = [r for r in run.log.read() if "loss" in r]
                if records:
                    summary.update(first_loss=records[0]["loss"], last_loss=records[-1]["loss"])
                if held_out is not None:
                    summary["figure"] = str(run.out / "reconstructions.png")
                if not trained:
                    summary["finished_before"] = True
                    done = f"wrote the missing {', '.join(written)}" if written else "nothing to do"
                    print(f"{run.out} had already finished all {cfg.epochs} epochs; {done}")
                elif quiet:
                    epochs = [r for r in run.log.read() if "train_loss" in r]
                    print(
                        f"pretrain: {cfg.model}, {len(epochs)} epochs, loss {epochs[-1]['train_loss']:.4f}, "
                        f"{run.progress.seconds / 60:.1f} min ({run.out})"
                    )
            barrier()
            return summary
    finally:
        shutdown()


def finish(
    run: Run, model: torch.nn.Module, settings: dict[str, Any], figure: Callable[[str, str], None], trained: bool
) -> list[str]:
    """Write the final files: all of them after training, else only those missing; returns their names."""
    written = []
    if trained or not final_model(run.out).exists():
        run.save_final(model, settings)
        written.append(FINAL_MODEL)
    records = [r for r in run.log.read() if "loss" in r]
    if records and (trained or not (run.out / "loss.png").exists()):
        save_figure(loss_curve_figure([r["step"] for r in records], [r["loss"] for r in records]), run.out / "loss.png")
        written.append("loss.png")
    if not (run.out / "reconstructions.png").exists():
        figure("reconstructions.png", f"epoch {run.progress.epoch}, step {run.progress.step}")
        if (run.out / "reconstructions.png").exists():
            written.append("reconstructions.png")
    return written
