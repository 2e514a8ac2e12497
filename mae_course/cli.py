"""The command line: ``python -m mae_course <command>`` (or ``mae-course <command>``).

    pretrain            train an MAE (default: a small one on the built-in data, minutes on a CPU)
    linprobe            linear-probe an encoder: frozen features, BatchNorm + linear head, LARS
    finetune            fine-tune an encoder end to end (or from scratch, without --checkpoint)
    partial-finetune    fine-tune only the last k blocks, or the MLP of the last block
    evaluate            all of the above for one checkpoint, plus the from-scratch and random baselines
    sweep               vary one pretraining setting (masking ratio, decoder depth, ...), evaluate each
    bench               time pretraining: table2 (asymmetric encoder vs mask tokens), model (images/s, MFU,
                        against transformers' ViTMAE), e2e (can the CPU or GPU data pipeline feed the model?)
    prepare             write a pre-resized JPEG copy of an image folder (e.g. ImageNet at shorter side 256)

Every command runs unchanged under ``torchrun`` (one node or many). Errors about the user's
input (a wrong path, a bad value, a size that does not fit) are printed as one line and exit
with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

from .bench import Table2Config, run_table2, table2_text
from .classify import FinetuneConfig, LinprobeConfig, finetune, linprobe
from .e2e_bench import PIPELINES as E2E_PIPELINES
from .e2e_bench import EndToEndConfig, e2e_text, run_end_to_end
from .errors import ConfigError, MAECourseError
from .evaluation import EvaluationConfig, evaluate
from .gpu_data import PIPELINES
from .masking import SAMPLINGS
from .prepare import PrepareConfig, prepare, summary_text
from .pretrain import AMP_MODES, OPTIMIZER_IMPLS, PretrainConfig, pretrain
from .registry import MODEL_CONFIGS
from .sweep import ABLATIONS, SweepConfig, parse_value, sweep
from .throughput import IMPLEMENTATIONS, ThroughputConfig, run_throughput, throughput_text
from .transforms import AUGMENTATIONS
from .vit import POOLINGS


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg}): {text}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"decoder_depth\": 1}}', got {text}")
    return value


def _data_args(p: argparse.ArgumentParser, d) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        default=d.data,
        help="builtin (generated, no download), cifar10, stl10, imagenette, or an ImageFolder path",
    )
    g.add_argument(
        "--data-root", default=d.data_root, help="where named datasets live (default: ~/.cache/mae_course/datasets)"
    )
    g.add_argument("--download", action="store_true", help="download a named dataset that is not there yet")
    g.add_argument(
        "--skip-bad-images", action="store_true", help="skip (and count) unreadable image files instead of stopping"
    )
    g.add_argument(
        "--image-size", type=int, default=d.image_size, help="input side in pixels; a multiple of the patch size"
    )
    g.add_argument("--subset", type=int, default=d.subset, help="use only the first N training images")
    if hasattr(d, "val_subset"):
        g.add_argument(
            "--val-subset", type=int, default=d.val_subset, help="evaluate on the first N validation images only"
        )
    g.add_argument(
        "--num-workers",
        type=int,
        default=d.num_workers,
        help="DataLoader workers (default: 0 for built-in data, else one per spare core, at most 8)",
    )


def _optim_args(p: argparse.ArgumentParser, d) -> argparse._ArgumentGroup:
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="images per process per step")
    g.add_argument("--accum-iter", type=int, default=d.accum_iter, help="gradient accumulation steps")
    g.add_argument(
        "--blr",
        type=float,
        default=d.blr,
        help="base lr: lr = blr x effective batch / 256 (effective = batch x accum x processes)",
    )
    g.add_argument("--lr", type=float, default=d.lr, help="absolute lr (overrides --blr)")
    g.add_argument("--min-lr", type=float, default=d.min_lr)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument(
        "--amp",
        choices=AMP_MODES,
        default=d.amp,
        help="mixed precision: auto = bf16 (or fp16 + scaler) on GPU, none on CPU",
    )
    return g


def _run_args(p: argparse.ArgumentParser, d) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--output-dir", default=d.output_dir)
    g.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CHECKPOINT",
        help="continue a run (default: OUTPUT_DIR/checkpoint-last.pth)",
    )
    g.add_argument("--overwrite", action="store_true", help="start over in an output dir that already holds a run")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument(
        "--device", default=d.device, help="auto, cpu, cuda or cuda:N (under torchrun: each process's local GPU)"
    )
    g.add_argument("--log-every", type=int, default=d.log_every, help="optimizer steps between log lines")
    g.add_argument("--save-every", type=int, default=d.save_every, help="epochs between checkpoints")


def _encoder_args(p: argparse.ArgumentParser, d) -> None:
    g = p.add_argument_group("encoder")
    g.add_argument(
        "--checkpoint",
        default=d.checkpoint,
        help="an MAE checkpoint (the course's or a released one); none: random initialisation",
    )
    g.add_argument(
        "--model",
        choices=list(MODEL_CONFIGS),
        default=d.model,
        help="architecture, for checkpoints without a config or no checkpoint (default: mae_vit_mini_patch4_32)",
    )
    g.add_argument(
        "--global-pool",
        choices=POOLINGS,
        default=d.global_pool,
        help="features: the cls token or the average of the patch tokens",
    )


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where its help already says it in words."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.help and "(default" in action.help:
            return action.help
        return super()._get_help_string(action)


def _command(sub, name: str, help: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        formatter_class=_DefaultsHelp,
    )


def _add_pretrain(sub) -> None:
    d = PretrainConfig()
    p = _command(sub, "pretrain", "pretrain an MAE (default: a small one on the built-in data, a few minutes on a CPU)")
    _data_args(p, d)
    g = p.add_argument_group("augmentation")
    g.add_argument(
        "--augment", choices=AUGMENTATIONS, default=d.augment, help="pretraining augmentation (paper Table 1e)"
    )
    g.add_argument(
        "--crop-min-scale", type=float, default=d.crop_min_scale, help="smallest area fraction of RandomResizedCrop"
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=list(MODEL_CONFIGS), default=d.model)
    g.add_argument(
        "--model-overrides",
        type=_json_object,
        default={},
        metavar="JSON",
        help="constructor overrides, e.g. '{\"decoder_depth\": 1}'",
    )
    g.add_argument(
        "--norm-pix-loss",
        action=argparse.BooleanOptionalAction,
        default=d.norm_pix_loss,
        help="predict per-patch normalized pixels",
    )
    g.add_argument("--mask-ratio", type=float, default=d.mask_ratio)
    g.add_argument("--mask-sampling", choices=SAMPLINGS, default=d.mask_sampling)
    g.add_argument("--mask-token-in-encoder", action="store_true", help="the 'encoder w/ [M]' baseline (Table 1c)")
    g = _optim_args(p, d)
    g.add_argument("--betas", type=float, nargs=2, default=d.betas, metavar=("B1", "B2"))
    _run_args(p, d)
    p.add_argument("--vis-images", type=int, default=d.vis_images, help="images in the reconstruction figure")
    p.add_argument(
        "--check-grad-sync",
        action="store_true",
        help="debugging torchrun: check every step that all processes hold the same gradients (logs grad_sync_max_diff)",
    )
    g = p.add_argument_group("speed (each option gives the same losses, up to rounding; see also --amp)")
    g.add_argument(
        "--optimizer-impl",
        choices=OPTIMIZER_IMPLS,
        default=d.optimizer_impl,
        help="AdamW kernel: auto = fused on GPU and CPU, foreach elsewhere",
    )
    g.add_argument(
        "--compile", action="store_true", help="torch.compile the model: a slow first step (compiling), faster after"
    )
    g.add_argument(
        "--grad-checkpointing",
        action="store_true",
        help="recompute each block's activations in the backward pass: less activation memory (ViT-H, big batches), ~30%% more compute",
    )
    g.add_argument(
        "--data-pipeline",
        choices=PIPELINES,
        default=d.data_pipeline,
        help="cpu: workers decode and augment; gpu: workers only read the files, the GPU decodes the JPEGs and "
        "augments (ImageFolder data); auto: gpu on CUDA with an ImageFolder, else cpu",
    )
    g.add_argument(
        "--bucket-cap-mb",
        type=float,
        default=d.bucket_cap_mb,
        help="under torchrun: DDP all-reduces the gradients in buckets of this many MB (torch's default)",
    )
    p.set_defaults(func=_runner(PretrainConfig, pretrain, _report_pretrain))


def _add_finetune(sub, name: str, help: str, partial: bool) -> None:
    d = FinetuneConfig(output_dir=f"runs/{name}")
    p = _command(sub, name, help)
    _encoder_args(p, d)
    if partial:
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument(
            "--blocks",
            dest="tune_blocks",
            type=int,
            help="train only the last k blocks (k = 0 is linear probing: use linprobe)",
        )
        g.add_argument(
            "--mlp-only", dest="tune_mlp_only", action="store_true", help="train only the MLP of the last block"
        )
    _data_args(p, d)
    g = p.add_argument_group("fine-tuning recipe")
    g.add_argument(
        "--layer-decay",
        type=float,
        default=d.layer_decay,
        help="layer-wise lr decay (paper: 0.75 for ViT-L, 0.65 for ViT-B)",
    )
    g.add_argument("--drop-path", type=float, default=d.drop_path)
    g.add_argument("--smoothing", type=float, default=d.smoothing, help="label smoothing")
    g.add_argument("--mixup", type=float, default=d.mixup, help="mixup alpha (0: off)")
    g.add_argument("--cutmix", type=float, default=d.cutmix, help="cutmix alpha (0: off)")
    g.add_argument("--randaug", type=int, default=d.randaug, help="RandAugment magnitude, 2 ops (0: off)")
    g.add_argument("--reprob", type=float, default=d.reprob, help="random erasing probability")
    g.add_argument("--crop-min-scale", type=float, default=d.crop_min_scale)
    _optim_args(p, d)
    _run_args(p, d)
    p.set_defaults(func=_runner(FinetuneConfig, finetune, _report_classify))


def _add_linprobe(sub) -> None:
    d = LinprobeConfig()
    p = _command(sub, "linprobe", "linear-probe an encoder: frozen features, BatchNorm (no affine) + linear head")
    _encoder_args(p, d)
    _data_args(p, d)
    g = p.add_argument_group("probe")
    g.add_argument("--optimizer", choices=("lars", "sgd"), default=d.optimizer)
    g.add_argument(
        "--augment", choices=("none", "crop"), default=d.augment, help="crop: RandomResizedCrop + flip, as on ImageNet"
    )
    g.add_argument(
        "--cache-features",
        action=argparse.BooleanOptionalAction,
        default=d.cache_features,
        help="compute the frozen features once (default: when one process and no augmentation)",
    )
    _optim_args(p, d)
    _run_args(p, d)
    p.set_defaults(func=_runner(LinprobeConfig, linprobe, _report_classify))


def _add_evaluate(sub) -> None:
    d = EvaluationConfig()
    p = _command(
        sub,
        "evaluate",
        "judge a checkpoint the paper's three ways (linear probe, fine-tuning, partial fine-tuning) against from-scratch and random-encoder baselines",
    )
    p.add_argument(
        "--checkpoint",
        default=d.checkpoint,
        help="the MAE checkpoint to evaluate (none: only meaningful with --only for baselines)",
    )
    p.add_argument(
        "--model", choices=list(MODEL_CONFIGS), default=d.model, help="architecture, for checkpoints without a config"
    )
    p.add_argument("--output-dir", default=d.output_dir)
    p.add_argument("--data", default=d.data)
    p.add_argument("--data-root", default=d.data_root)
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--subset", type=int, default=d.subset, help="train every classifier on the first N images only")
    p.add_argument(
        "--val-subset", type=int, default=d.val_subset, help="evaluate on the first N validation images only"
    )
    p.add_argument("--device", default=d.device)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--linprobe", type=_json_object, default={}, metavar="JSON", help="linprobe settings, e.g. '{\"epochs\": 30}'"
    )
    p.add_argument(
        "--finetune",
        type=_json_object,
        default={},
        metavar="JSON",
        help='finetune settings, e.g. \'{"epochs": 5, "mixup": 0}\'',
    )
    p.add_argument(
        "--partial-blocks",
        type=int,
        nargs="*",
        default=list(d.partial_blocks),
        metavar="K",
        help="partial fine-tuning of the last K blocks",
    )
    p.add_argument(
        "--partial-mlp",
        action=argparse.BooleanOptionalAction,
        default=d.partial_mlp,
        help="also tune only the last block's MLP",
    )
    p.add_argument(
        "--baselines",
        action=argparse.BooleanOptionalAction,
        default=d.baselines,
        help="also train from scratch and probe a random encoder",
    )
    p.add_argument(
        "--only",
        nargs="+",
        metavar="RUN",
        help="make only these runs (linprobe, finetune, linprobe_random, finetune_scratch, partial_K, partial_mlp)",
    )

    def run(args: argparse.Namespace) -> int:
        names = {f.name for f in fields(EvaluationConfig)}
        values = {k: v for k, v in vars(args).items() if k in names}
        values["partial_blocks"] = tuple(values["partial_blocks"])
        summary = evaluate(EvaluationConfig(**values), only=set(args.only) if args.only else None)
        for name, result in summary["runs"].items():
            print(
                f"{name:18s} top-1 {result['top1']:6.2f}%  top-5 {result['top5']:6.2f}%  ({result['wall_time_s']:.0f} s)"
            )
        print(f"results: {Path(args.output_dir) / 'results.json'}")
        return 0

    p.set_defaults(func=run)


def _add_sweep(sub) -> None:
    d = SweepConfig()
    p = _command(
        sub,
        "sweep",
        "vary one pretraining setting and, for each value, pretrain, linear-probe and fine-tune (Figure 5, Table 1)",
    )
    p.add_argument(
        "--ratios",
        type=float,
        nargs="+",
        metavar="R",
        help="masking ratios to sweep (the paper's Figure 5); same as --ablation mask_ratio --values R ...",
    )
    p.add_argument("--ablation", choices=list(ABLATIONS), default=d.ablation, help="the setting to vary")
    p.add_argument("--values", nargs="+", metavar="V", help="its values")
    p.add_argument("--output-dir", default=d.output_dir)
    p.add_argument("--data", default=d.data)
    p.add_argument("--data-root", default=d.data_root)
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument(
        "--pretrain",
        type=_json_object,
        default={},
        metavar="JSON",
        help="pretraining settings, e.g. '{\"epochs\": 20}'",
    )
    p.add_argument("--linprobe", type=_json_object, default={}, metavar="JSON", help="linear-probe settings")
    p.add_argument("--finetune", type=_json_object, default={}, metavar="JSON", help="fine-tuning settings")
    p.add_argument("--stages", nargs="+", choices=("pretrain", "linprobe", "finetune"), default=list(d.stages))

    def run(args: argparse.Namespace) -> int:
        if args.ratios:
            if args.values or args.ablation != "mask_ratio":
                raise ConfigError("give either --ratios, or --ablation with --values")
            values = tuple(args.ratios)
        elif args.values:
            values = tuple(parse_value(args.ablation, v) for v in args.values)
        elif args.ablation == "mask_ratio":
            values = d.values
        else:
            raise ConfigError(f"give the values of {args.ablation} to sweep with --values")
        names = {f.name for f in fields(SweepConfig)}
        settings = {k: v for k, v in vars(args).items() if k in names and k != "values"}
        settings["stages"] = tuple(settings["stages"])
        results = sweep(SweepConfig(**settings, values=values))
        for value, entry in results["runs"].items():
            scores = ", ".join(
                f"{stage} top-1 {entry[stage]['top1']:.2f}%" for stage in ("linprobe", "finetune") if stage in entry
            )
            print(
                f"{results['ablation']}={value}: pretrain loss {entry['pretrain']['final_loss']:.4f}"
                + (f", {scores}" if scores else "")
            )
        print(f"results: {Path(args.output_dir) / 'results.json'}")
        return 0

    p.set_defaults(func=run)


def _add_bench(sub) -> None:
    d, t = Table2Config(), ThroughputConfig()
    p = _command(
        sub,
        "bench",
        "time pretraining steps: Table 2 (asymmetric encoder vs mask tokens), or model throughput and MFU against a peer",
    )
    p.add_argument(
        "--suite",
        choices=("table2", "model", "e2e"),
        default="table2",
        help="table2: the asymmetric encoder against the encoder with mask tokens, per decoder depth; "
        "model: images/s, step time, MFU and memory of the fast path, the plain path and the peer "
        "(transformers' ViTMAEForPreTraining), per model and batch size; e2e: whether the CPU or the GPU data pipeline keeps up with the model",
    )
    p.add_argument("--models", "--model", nargs="+", choices=list(MODEL_CONFIGS), default=None,
                   help=f"table2: one model (default {d.model}); model: several (default {' '.join(t.models)})")  # fmt: skip
    p.add_argument("--model-overrides", type=_json_object, default=None, metavar="JSON",
                   help="e.g. a narrower model for a quick check")  # fmt: skip
    p.add_argument("--batch-sizes", "--batch-size", nargs="+", type=int, default=None,
                   help=f"table2: one (default {d.batch_size}); model: several (default {' '.join(map(str, t.batch_sizes))})")  # fmt: skip
    p.add_argument(
        "--steps", type=int, default=None, help=f"timed steps per measurement (default {d.steps} / {t.steps})"
    )
    p.add_argument("--warmup", type=int, default=None, help=f"untimed steps first (default {d.warmup} / {t.warmup})")
    p.add_argument("--mask-ratio", type=float, default=d.mask_ratio)
    p.add_argument("--device", default=d.device)
    p.add_argument("--amp", choices=AMP_MODES, default=d.amp, help="table2 and e2e suites")
    p.add_argument("--compile", action="store_true", help="table2 and e2e suites: torch.compile the models (fast path)")
    g = p.add_argument_group("table2 suite")
    g.add_argument("--decoder-depths", type=int, nargs="+", default=list(d.decoder_depths))
    g = p.add_argument_group("model suite")
    g.add_argument("--implementations", nargs="+", choices=IMPLEMENTATIONS, default=list(t.implementations))
    g.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's peak dense bf16 TFLOP/s for MFU (default: from the GPU's datasheet)")  # fmt: skip
    e = EndToEndConfig()
    g = p.add_argument_group("e2e suite (one --model and one --batch-size)")
    g.add_argument("--data", default=None, help="an ImageFolder of JPEGs (default: generate one)")
    g.add_argument("--generate", type=int, default=e.generate, help="images to generate without --data")
    g.add_argument("--generate-dir", default=e.generate_dir)
    g.add_argument("--pipelines", nargs="+", choices=E2E_PIPELINES, default=list(e.pipelines))
    g.add_argument("--image-size", type=int, default=e.image_size)
    g.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: one per spare core)")
    p.add_argument("--output", default=None, help="where the JSON results go (default runs/bench/SUITE.json)")

    def run(args: argparse.Namespace) -> int:
        output = args.output or f"runs/bench/{args.suite}.json"
        if args.suite != "model" and any(v is not None and len(v) != 1 for v in (args.models, args.batch_sizes)):
            raise ConfigError(f"the {args.suite} suite takes one --model and one --batch-size")
        if args.suite == "table2":
            cfg = Table2Config(
                model=args.models[0] if args.models else d.model,
                batch_size=args.batch_sizes[0] if args.batch_sizes else d.batch_size,
                steps=d.steps if args.steps is None else args.steps,
                warmup=d.warmup if args.warmup is None else args.warmup,
                decoder_depths=tuple(args.decoder_depths), mask_ratio=args.mask_ratio, device=args.device,
                amp=args.amp, compile=args.compile, model_overrides=args.model_overrides,
            )  # fmt: skip
            if cfg.batch_size < 1 or cfg.steps < 1 or cfg.warmup < 0:
                raise ConfigError("batch size and steps must be at least 1, warmup at least 0")
            results = run_table2(cfg, output)
            print(table2_text(results))
        elif args.suite == "e2e":
            cfg = EndToEndConfig(
                data=args.data, generate=args.generate, generate_dir=args.generate_dir,
                model=args.models[0] if args.models else e.model,
                image_size=args.image_size, batch_size=args.batch_sizes[0] if args.batch_sizes else e.batch_size,
                pipelines=tuple(args.pipelines), steps=e.steps if args.steps is None else args.steps,
                warmup=e.warmup if args.warmup is None else args.warmup, num_workers=args.num_workers,
                mask_ratio=args.mask_ratio, amp=args.amp, compile=args.compile, device=args.device,
                model_overrides=args.model_overrides,
            )  # fmt: skip
            results = run_end_to_end(cfg, output)
            print(e2e_text(results))
        else:
            cfg = ThroughputConfig(
                models=tuple(args.models or t.models), batch_sizes=tuple(args.batch_sizes or t.batch_sizes),
                implementations=tuple(args.implementations), steps=t.steps if args.steps is None else args.steps,
                warmup=t.warmup if args.warmup is None else args.warmup, mask_ratio=args.mask_ratio,
                device=args.device, model_overrides=args.model_overrides, peak_tflops=args.peak_tflops,
            )  # fmt: skip
            results = run_throughput(cfg, output)
            print(throughput_text(results))
        print(f"results: {output}")
        return 0

    p.set_defaults(func=run)


def _add_prepare(sub) -> None:
    d = PrepareConfig(src="", dst="")
    p = _command(
        sub,
        "prepare",
        "write a pre-resized RGB JPEG copy of an image folder (e.g. ImageNet's train/ + val/) for faster pretraining; "
        "rerun to continue an interrupted copy",
    )
    p.add_argument("src", help="the image folder to copy (any nesting of class folders)")
    p.add_argument("dst", help="where the copy goes (same relative paths, JPEG files)")
    p.add_argument("--short-side", type=int, default=d.short_side,
                   help="shorter side of larger images after resizing; smaller images are never upscaled")  # fmt: skip
    p.add_argument("--quality", type=int, default=d.quality,
                   help="JPEG quality of re-encoded images (small RGB JPEGs are copied as they are)")  # fmt: skip
    p.add_argument("--workers", type=int, default=d.workers, help="processes; 0: in this one; None: one per CPU core")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="count unreadable files and list them in DST/prepare_report.json instead of stopping")  # fmt: skip

    def run(args: argparse.Namespace) -> int:
        cfg = PrepareConfig(args.src, args.dst, args.short_side, args.quality, args.workers, args.skip_bad_images)
        print(summary_text(prepare(cfg)))
        return 0

    p.set_defaults(func=run)


def _runner(config_class, job: Callable, report: Callable) -> Callable[[argparse.Namespace], int]:
    names = {f.name for f in fields(config_class)}

    def run(args: argparse.Namespace) -> int:
        values = {k: v for k, v in vars(args).items() if k in names}
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        report(job(config_class(**values)))
        return 0

    return run


def _report_pretrain(summary: dict) -> None:
    if summary.get("first_loss") is not None:
        figure = f"; reconstructions: {summary['figure']}" if "figure" in summary else ""
        print(f"done: {summary['steps']} steps, loss {summary['first_loss']:.4f} -> {summary['last_loss']:.4f}{figure}")


def _report_classify(summary: dict) -> None:
    print(
        f"done: top-1 {summary['top1']:.2f}%, top-5 {summary['top5']:.2f}% (best top-1 {summary['best_top1']:.2f}%) "
        f"after {summary['epochs']} epochs, {summary['wall_time_s']:.0f} s"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mae_course", description="Masked Autoencoders, from the first patch to ImageNet."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    _add_pretrain(sub)
    _add_linprobe(sub)
    _add_finetune(
        sub, "finetune", "fine-tune an encoder end to end (without --checkpoint: train from scratch)", partial=False
    )
    _add_finetune(
        sub, "partial-finetune", "fine-tune only the last k blocks (or the last block's MLP) and the head", partial=True
    )
    _add_evaluate(sub)
    _add_sweep(sub)
    _add_bench(sub)
    _add_prepare(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (MAECourseError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        print(f"mae_course {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
