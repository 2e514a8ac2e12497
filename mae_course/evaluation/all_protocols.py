"""Lesson 07: the paper's three measures of an encoder, and the baselines, in one resumable command.

    python -m mae_course evaluate --checkpoint runs/demo/model.safetensors --output-dir runs/eval

runs, each in a sub-folder of its own:

    linprobe/            linear probing of the MAE encoder
    linprobe_random/     linear probing of a randomly initialised encoder (the floor)
    finetune/            end-to-end fine-tuning of the MAE encoder
    finetune_scratch/    the same classifier trained from random weights, same budget
    partial_<k>/         fine-tuning only the last k blocks (Figure 9), and partial_mlp/ the
                         last block's MLP only

and writes ``results.json`` (every run's top-1/top-5 accuracy and wall time, the settings, the
data, the hardware and the git commit) and ``results.png``. A finished run is kept, so an
interrupted evaluation continues where it stopped; the settings every run shares (the
checkpoint's content among them) are recorded in ``evaluation.json``, and a later start with
other ones is refused rather than mixing two evaluations in one ``results.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..config import check_types, from_mapping, need, option
from ..figures import CourseFigure, save_figure
from ..model.registry import MODEL_CONFIGS
from ..train.stages import Stages, classifier_results, file_fingerprint
from .classify import METRICS
from .finetune import FinetuneConfig, finetune
from .linprobe import LinprobeConfig, linprobe

RESULTS = "results.json"
SETTINGS = "evaluation.json"
# Settings of evaluate itself, given to every run: --linprobe / --finetune must not set them again.
SHARED = ("data", "data_root", "image_size", "subset", "val_subset", "device", "seed", "model")


@dataclass
class EvaluationConfig:
    """Which runs to make, and the settings they share."""

    checkpoint: str | None = option(
        None, "the MAE checkpoint to evaluate (none: only meaningful with --only for baselines)"
    )
    model: str | None = option(None, "architecture, for checkpoints without a config", choices=tuple(MODEL_CONFIGS))
    output_dir: str = option("runs/evaluate", "the evaluation's folder")
    data: str = option(
        "builtin", "builtin (generated, no download), cifar10, stl10, imagenette, or an ImageFolder path"
    )
    data_root: str | None = option(None, "where named datasets live (default: ~/.cache/mae_course/datasets)")
    image_size: int = option(32, "input side in pixels")
    subset: int | None = option(None, "train every classifier on the first N images only")
    val_subset: int | None = option(None, "evaluate on the first N validation images only")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    seed: int = option(0, "seed of every run")
    linprobe: dict[str, Any] = option({}, "linprobe settings, e.g. '{\"epochs\": 30}'", metavar="JSON")
    finetune: dict[str, Any] = option({}, 'finetune settings, e.g. \'{"epochs": 5, "mixup": 0}\'', metavar="JSON")
    partial_blocks: tuple[int, ...] = option(
        (1, 2, 4), "partial fine-tuning of the last K blocks", metavar="K", nargs="*"
    )
    partial_mlp: bool = option(True, "also tune only the last block's MLP", negatable=True)
    baselines: bool = option(True, "also train from scratch and probe a random encoder", negatable=True)
    only: tuple[str, ...] | None = option(
        None,
        "make only these runs (linprobe, finetune, linprobe_random, finetune_scratch, partial_K, partial_mlp)",
        metavar="RUN",
    )

    def validate(self) -> None:
        check_types(self, "evaluate")
        if self.checkpoint is not None and not Path(self.checkpoint).expanduser().is_file():
            raise FileNotFoundError(f"checkpoint not found: {self.checkpoint}")
        need(
            all(k >= 1 for k in self.partial_blocks),
            "partial blocks must be at least 1 (0 blocks is the linear probe, run anyway)",
        )
        runs = planned_runs(self)  # checks --linprobe and --finetune
        unknown = sorted(set(self.only or ()) - set(runs))
        need(not unknown, f"--only names no planned run: {', '.join(unknown)}; the runs are {', '.join(runs)}")
        for _, run_config in runs.values():
            run_config.validate()


def planned_runs(cfg: EvaluationConfig) -> dict[str, tuple[Callable, Any]]:
    """name -> (job, its config), in the order they run."""
    common = {name: getattr(cfg, name) for name in SHARED}
    fixed = {name: f"evaluate's --{name.replace('_', '-')}" for name in (*SHARED, "checkpoint", "output_dir")}
    out = Path(cfg.output_dir)
    probe = replace(from_mapping(LinprobeConfig, cfg.linprobe, "--linprobe", fixed), **common)
    tune = replace(from_mapping(FinetuneConfig, cfg.finetune, "--finetune", fixed), **common)
    runs: dict[str, tuple[Callable, Any]] = {
        "linprobe": (linprobe, replace(probe, checkpoint=cfg.checkpoint, output_dir=str(out / "linprobe"))),
        "finetune": (finetune, replace(tune, checkpoint=cfg.checkpoint, output_dir=str(out / "finetune"))),
    }
    if cfg.baselines:
        runs["linprobe_random"] = (linprobe, replace(probe, checkpoint=None, output_dir=str(out / "linprobe_random")))
        runs["finetune_scratch"] = (finetune, replace(tune, checkpoint=None, output_dir=str(out / "finetune_scratch")))
    for k in cfg.partial_blocks:
        runs[f"partial_{k}"] = (
            finetune,
            replace(tune, checkpoint=cfg.checkpoint, tune_blocks=k, output_dir=str(out / f"partial_{k}")),
        )
    if cfg.partial_mlp:
        runs["partial_mlp"] = (
            finetune,
            replace(tune, checkpoint=cfg.checkpoint, tune_mlp_only=True, output_dir=str(out / "partial_mlp")),
        )
    return runs


def fixed_settings(cfg: EvaluationConfig) -> dict[str, Any]:
    """What every run of one evaluation shares: the checkpoint (its content, not only its name) and the settings."""
    settings = {name: getattr(cfg, name) for name in (*SHARED, "linprobe", "finetune") if name != "device"}
    return {"checkpoint_file": file_fingerprint(cfg.checkpoint), **settings}


def _recorded_in_results(out: Path) -> dict[str, Any] | None:
    """The settings of an evaluation made before evaluation.json existed: unknown, unless nothing ran yet."""
    return {"unknown": "made before the settings were recorded"} if (out / RESULTS).exists() else None


def evaluate_encoder(cfg: EvaluationConfig) -> dict[str, Any]:
    """Make every planned run not made yet; returns (and writes) the collected results."""
    cfg.validate()
    runs = planned_runs(cfg)
    with Stages(cfg.output_dir, SETTINGS, fixed_settings(cfg), "an evaluation", _recorded_in_results) as stages:
        for name, (job, run_config) in runs.items():
            if cfg.only is None or name in cfg.only:
                stages.run(name, job, run_config, METRICS)
        return collect(cfg, stages)


def collect(cfg: EvaluationConfig, stages: Stages) -> dict[str, Any]:
    """Gather the finished runs' metrics into results.json (and draw results.png)."""
    results: dict[str, Any] = {}
    for name, (_, run_config) in planned_runs(cfg).items():
        folder = Path(run_config.output_dir)
        if (folder / METRICS).exists():
            results[name] = classifier_results(folder)
    summary = {
        "checkpoint": cfg.checkpoint,
        "checkpoint_file": file_fingerprint(cfg.checkpoint),
        "runs": results,
        "settings": asdict(cfg),
        "data": {"name": cfg.data, "image_size": cfg.image_size, "subset": cfg.subset, "val_subset": cfg.val_subset},
    }
    summary = stages.write_results(summary, RESULTS)
    if results:
        save_figure(results_figure(summary), stages.out / "results.png")
    return summary


RUN_LABELS = {
    "linprobe": "linear probe",
    "linprobe_random": "linear probe, random encoder",
    "finetune": "fine-tuning",
    "finetune_scratch": "from scratch",
    "partial_mlp": "last block's MLP tuned",
}


def tuned_blocks(name: str) -> int | None:
    """k for the run ``partial_k`` (the last k blocks tuned); None for any other run, partial_mlp too."""
    prefix, _, k = name.partition("_")
    return int(k) if prefix == "partial" and k.isdigit() else None


def run_label(name: str) -> str:
    """The words for a run's key: ``partial_2`` -> "last 2 blocks tuned"."""
    blocks = tuned_blocks(name)
    if blocks is not None:
        return "last block tuned" if blocks == 1 else f"last {blocks} blocks tuned"
    return RUN_LABELS.get(name, name)


def results_figure(summary: dict[str, Any], longer: dict[str, Any] | None = None) -> CourseFigure:
    """Top-1 accuracy of every run (left) and of partial fine-tuning against tuned blocks (right).

    ``longer``: the results of the same partial runs on a longer schedule, drawn as hollow markers.
    """
    runs = summary["runs"]
    fig = CourseFigure(figsize=(11, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(1.3, 1))
    names = [n for n in ("linprobe_random", "linprobe", "partial_mlp", "finetune_scratch", "finetune") if n in runs]
    names += sorted((n for n in runs if tuned_blocks(n) is not None), key=tuned_blocks)
    bars = left.barh(
        [run_label(n) for n in names],
        [runs[n]["top1"] for n in names],
        color=["0.6" if "random" in n or "scratch" in n else "C0" for n in names],
    )
    left.bar_label(bars, fmt="%.1f", padding=3, fontsize=8)
    left.set(xlabel="top-1 accuracy (%)", title="the MAE encoder (blue) against baselines (grey)")
    left.invert_yaxis()
    points = [(0, runs["linprobe"]["top1"])] if "linprobe" in runs else []
    points += sorted((tuned_blocks(n), r["top1"]) for n, r in runs.items() if tuned_blocks(n) is not None)
    if points:
        epochs = next((r["epochs"] for n, r in runs.items() if n.startswith("partial_")), None)
        right.plot(
            *zip(*points, strict=True), "o-", label="last k blocks tuned" + (f", {epochs} epochs" if epochs else "")
        )
    if "finetune" in runs:
        right.axhline(runs["finetune"]["top1"], color="C1", ls="--", label="full fine-tuning")
    if "finetune_scratch" in runs:
        right.axhline(runs["finetune_scratch"]["top1"], color="0.5", ls=":", label="from scratch")
    if "partial_mlp" in runs:
        right.plot(
            [0.5],
            [runs["partial_mlp"]["top1"]],
            "s",
            color="C2",
            label=f"last block's MLP only, {runs['partial_mlp']['epochs']} epochs",
        )
    for name, run in (longer or {}).get("runs", {}).items():
        x = 0.5 if name == "partial_mlp" else tuned_blocks(name)
        color = "C2" if name == "partial_mlp" else "C0"
        right.plot(
            [x],
            [run["top1"]],
            "o" if x >= 1 else "s",
            mfc="none",
            color=color,
            ms=8,
            label=f"{run_label(name)}, {run['epochs']} epochs",
        )
    right.set(
        xlabel="blocks fine-tuned (0 = linear probe)",
        ylabel="top-1 (%)",
        title="partial fine-tuning (paper's Figure 9)",
    )
    right.legend(fontsize=8)
    return fig
