"""The command line: ``python -m mae_course <command>`` (or ``mae-course <command>``).

    pretrain            train an MAE (default: a small one on the built-in data, minutes on a CPU)
    linprobe            linear-probe an encoder: frozen features, BatchNorm + linear head, LARS
    finetune            fine-tune an encoder end to end (or from scratch, without --checkpoint)
    partial-finetune    fine-tune only the last k blocks, or the MLP of the last block
    segment             fine-tune an encoder to label every pixel (transfer to dense prediction)
    evaluate            all of the above for one checkpoint, plus the from-scratch and random baselines
    sweep               vary one pretraining setting (masking ratio, decoder depth, ...), evaluate each
    bench               time pretraining: table2 (asymmetric encoder vs mask tokens), model (images/s, MFU,
                        against transformers' ViTMAE), e2e (can the CPU or GPU data pipeline feed the model?)
    prepare             write a pre-resized JPEG copy of an image folder (e.g. ImageNet at shorter side 256)
    export-onnx         write an MAE as ONNX (images and masking noise in, predictions and mask out)

Every flag is generated from a field of the command's settings dataclass and its help text
(:func:`mae_course.config.option`), so a setting is declared once, with its default, type,
choices and help. Every command runs unchanged under ``torchrun`` (one node or many). Errors
about the user's input or environment (a wrong path, a bad value, a full disk, a folder in use)
are printed as one line and exit with status 2, without a traceback; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .config import DefaultsHelp, add_options, from_args
from .errors import ConfigError, MAECourseError

# ---------------------------------------------------------------------------------------- the commands
# Each command runs a job on its settings (built from the flags) and prints a short report.


def _pretrain(cfg: Any, args: argparse.Namespace) -> None:
    from .train.pretrain import pretrain

    summary = pretrain(cfg)
    if summary.get("first_loss") is not None:
        figure = f"; reconstructions: {summary['figure']}" if "figure" in summary else ""
        print(f"done: {summary['steps']} steps, loss {summary['first_loss']:.4f} -> {summary['last_loss']:.4f}{figure}")


def _classify(cfg: Any, args: argparse.Namespace) -> None:
    from .evaluation.finetune import finetune
    from .evaluation.linprobe import linprobe

    summary = (linprobe if cfg.kind == "linprobe" else finetune)(cfg)
    print(
        f"done: top-1 {summary['top1']:.2f}%, top-5 {summary['top5']:.2f}% (best top-1 {summary['best_top1']:.2f}%) "
        f"after {summary['epochs']} epochs, {summary['wall_time_s']:.0f} s"
    )


def _segment(cfg: Any, args: argparse.Namespace) -> None:
    from .evaluation.segment import segment

    summary = segment(cfg)
    print(
        f"done: mIoU {summary['miou']:.2f}%, pixel accuracy {summary['pixel_accuracy']:.2f}% "
        f"(best mIoU {summary['best_miou']:.2f}%) after {summary['epochs']} epochs, {summary['wall_time_s']:.0f} s"
    )


def _evaluate(cfg: Any, args: argparse.Namespace) -> None:
    from .evaluation.all_protocols import evaluate_encoder

    for name, result in evaluate_encoder(cfg)["runs"].items():
        print(f"{name:18s} top-1 {result['top1']:6.2f}%  top-5 {result['top5']:6.2f}%  ({result['wall_time_s']:.0f} s)")
    print(f"results: {Path(cfg.output_dir) / 'results.json'}")


def _sweep(cfg: Any, args: argparse.Namespace) -> None:
    from .experiments.sweep import SweepConfig, parse_value, sweep

    if args.ratios and (args.values or args.ablation != "mask_ratio"):
        raise ConfigError("give either --ratios, or --ablation with --values")
    if not (args.ratios or args.values or args.ablation == "mask_ratio"):
        raise ConfigError(f"give the values of {args.ablation} to sweep with --values")
    values = args.ratios or [parse_value(args.ablation, v) for v in args.values or ()] or SweepConfig().values
    results = sweep(dataclasses.replace(cfg, values=tuple(values)))
    for value, entry in results["runs"].items():
        scores = [f"{stage} top-1 {entry[stage]['top1']:.2f}%" for stage in ("linprobe", "finetune") if stage in entry]
        loss = f"pretrain loss {entry['pretrain']['final_loss']:.4f}" if "pretrain" in entry else "not pretrained yet"
        print(", ".join([f"{results['ablation']}={value}: {loss}", *scores]))
    print(f"results: {Path(cfg.output_dir) / 'results.json'}")


def _bench(cfg: Any, args: argparse.Namespace) -> None:
    from .experiments.bench import bench

    _, text, path = bench(cfg)
    print(f"{text}\nresults: {path}")


def _prepare(cfg: Any, args: argparse.Namespace) -> None:
    from .data.prepare import prepare, summary_text

    print(summary_text(prepare(cfg)))


def _export_onnx(cfg: Any, args: argparse.Namespace) -> None:
    from .seeing.onnx_export import export_onnx, largest_difference, load_for_export, onnx_session

    cfg.validate()
    model = load_for_export(cfg.checkpoint, cfg.model)
    path = export_onnx(model, cfg.output_path())
    difference = largest_difference(model, onnx_session(path))
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); "
        f"onnxruntime's predictions are PyTorch's to {difference:.1e}"
    )


def _partial_flags(p: argparse.ArgumentParser) -> None:
    choice = p.add_mutually_exclusive_group(required=True)
    choice.add_argument(
        "--blocks",
        dest="tune_blocks",
        type=int,
        help="train only the last k blocks (k = 0 is linear probing: use linprobe)",
    )
    choice.add_argument(
        "--mlp-only", dest="tune_mlp_only", action="store_true", help="train only the MLP of the last block"
    )


def _ratio_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ratios",
        type=float,
        nargs="+",
        metavar="R",
        help="masking ratios to sweep (the paper's Figure 5); same as --ablation mask_ratio --values R ...",
    )


# name: (help, settings class, runner, flags of its own, command-line defaults)
COMMANDS: dict[str, tuple[str, str, Callable, Callable | None, dict]] = {
    "pretrain": (
        "pretrain an MAE (default: a small one on the built-in data, a few minutes on a CPU)",
        "train.pretrain:PretrainConfig",
        _pretrain,
        None,
        {},
    ),
    "linprobe": (
        "linear-probe an encoder: frozen features, BatchNorm (no affine) + linear head",
        "evaluation.linprobe:LinprobeConfig",
        _classify,
        None,
        {},
    ),
    "finetune": (
        "fine-tune an encoder end to end (without --checkpoint: train from scratch)",
        "evaluation.finetune:FinetuneConfig",
        _classify,
        None,
        {},
    ),
    "partial-finetune": (
        "fine-tune only the last k blocks (or the last block's MLP) and the head",
        "evaluation.finetune:FinetuneConfig",
        _classify,
        _partial_flags,
        {"output_dir": "runs/partial-finetune"},
    ),
    "segment": (
        "fine-tune an encoder to label every pixel of the built-in images (lesson 10: transfer to dense prediction)",
        "evaluation.segment:SegmentConfig",
        _segment,
        None,
        {},
    ),
    "evaluate": (
        "judge a checkpoint the paper's three ways (linear probe, fine-tuning, partial fine-tuning) against "
        "from-scratch and random-encoder baselines",
        "evaluation.all_protocols:EvaluationConfig",
        _evaluate,
        None,
        {},
    ),
    "sweep": (
        "vary one pretraining setting and, for each value, pretrain, linear-probe and fine-tune (Figure 5, Table 1)",
        "experiments.sweep:SweepConfig",
        _sweep,
        _ratio_flag,
        {"values": None},
    ),
    "bench": (
        "time pretraining steps: Table 2 (asymmetric encoder vs mask tokens), or model throughput and MFU "
        "against a peer",
        "experiments.bench:BenchConfig",
        _bench,
        None,
        {},
    ),
    "prepare": (
        "write a pre-resized RGB JPEG copy of an image folder (e.g. ImageNet's train/ + val/) for faster "
        "pretraining; rerun to continue an interrupted copy",
        "data.prepare:PrepareConfig",
        _prepare,
        None,
        {},
    ),
    "export-onnx": (
        "write an MAE as ONNX: images and masking noise in, predictions and mask out (the website's "
        "in-browser explorer runs it)",
        "seeing.onnx_export:OnnxExportConfig",
        _export_onnx,
        None,
        {},
    ),
}


def _settings_class(path: str) -> type:
    module, name = path.split(":")
    return getattr(importlib.import_module(f"mae_course.{module}"), name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mae_course", description="Masked Autoencoders, from the first patch to ImageNet."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (help, settings, _, own_flags, defaults) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", formatter_class=DefaultsHelp)
        if own_flags is not None:
            own_flags(p)
        add_options(p, _settings_class(settings), defaults)
    return parser


def one_line(error: BaseException) -> str:
    """An error as the one line the command line prints: an OSError names its file and reason."""
    if isinstance(error, OSError) and error.strerror and not isinstance(error, MAECourseError):
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror}"
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split("\n"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _, settings, run, _, _ = COMMANDS[args.command]
    try:
        run(from_args(_settings_class(settings), args), args)
        return 0
    except (MAECourseError, OSError) as e:  # bad input, or the environment: a missing file, a full disk, ...
        print(f"mae_course {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
