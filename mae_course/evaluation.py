"""The paper's three measures of an encoder, and the baselines, in one resumable command.

    python -m mae_course evaluate --checkpoint runs/demo/model.pth --output-dir runs/eval

runs, each in a sub-folder of its own:

    linprobe/            linear probing of the MAE encoder
    linprobe_random/     linear probing of a randomly initialised encoder (the floor)
    finetune/            end-to-end fine-tuning of the MAE encoder
    finetune_scratch/    the same classifier trained from random weights, same budget
    partial_<k>/         fine-tuning only the last k blocks (Figure 9), and partial_mlp/ the
                         last block's MLP only

and writes ``results.json`` (every run's top-1/top-5 accuracy and wall time, the settings, the
data, the hardware and the git commit) and ``results.png``. A run whose ``metrics.json`` exists
is not redone, so an interrupted evaluation continues where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .classify import METRICS, FinetuneConfig, LinprobeConfig, finetune, linprobe
from .errors import ConfigError
from .figures import CourseFigure
from .provenance import git_commit, started
from .training import CHECKPOINT, save_figure

RESULTS = "results.json"


@dataclass
class EvaluationConfig:
    """Which runs to make, and the settings they share."""

    checkpoint: str | None = None
    output_dir: str = "runs/evaluate"
    model: str | None = None
    data: str = "builtin"
    data_root: str | None = None
    image_size: int = 32
    subset: int | None = None
    val_subset: int | None = None
    device: str = "auto"
    seed: int = 0
    linprobe: dict[str, Any] = field(default_factory=dict)  # overrides of LinprobeConfig
    finetune: dict[str, Any] = field(default_factory=dict)  # overrides of FinetuneConfig
    partial_blocks: tuple[int, ...] = (1, 2, 4)
    partial_mlp: bool = True
    baselines: bool = True

    def validate(self) -> None:
        if self.checkpoint is not None and not Path(self.checkpoint).expanduser().is_file():
            raise FileNotFoundError(f"checkpoint not found: {self.checkpoint}")
        if any(k < 1 for k in self.partial_blocks):
            raise ConfigError("partial blocks must be at least 1 (0 blocks is the linear probe, run anyway)")


def planned_runs(cfg: EvaluationConfig) -> dict[str, tuple[Callable, Any]]:
    """name -> (job, its config), in the order they run."""
    common = dict(data=cfg.data, data_root=cfg.data_root, image_size=cfg.image_size, subset=cfg.subset,
                  val_subset=cfg.val_subset, device=cfg.device, seed=cfg.seed, model=cfg.model)  # fmt: skip
    out = Path(cfg.output_dir)
    probe = LinprobeConfig(**common, **cfg.linprobe)
    tune = FinetuneConfig(**common, **cfg.finetune)
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


def evaluate(cfg: EvaluationConfig, only: set[str] | None = None) -> dict[str, Any]:
    """Make every planned run not made yet; returns (and writes) the collected results."""
    cfg.validate()
    out = Path(cfg.output_dir).expanduser()
    started(out)  # record where the evaluation first started
    runs = planned_runs(cfg)
    for run_config in (c for _, c in runs.values()):
        run_config.validate()
    for name, (job, run_config) in runs.items():
        if only is not None and name not in only:
            continue
        if (Path(run_config.output_dir) / METRICS).exists():
            print(f"{name}: done before, kept")
            continue
        if (Path(run_config.output_dir) / CHECKPOINT).exists():
            run_config.resume = "auto"  # interrupted before: continue it
            print(f"{name}: resuming ({run_config.output_dir})")
        else:
            run_config.overwrite = True  # leftovers of a run that never saved a checkpoint
            print(f"{name}: running ({run_config.output_dir})")
        job(run_config)
    return collect(cfg)


def collect(cfg: EvaluationConfig) -> dict[str, Any]:
    """Gather the finished runs' metrics into results.json (and draw results.png)."""
    out = Path(cfg.output_dir).expanduser()
    results: dict[str, Any] = {}
    for name, (_, run_config) in planned_runs(cfg).items():
        path = Path(run_config.output_dir) / METRICS
        if path.exists():
            metrics = json.loads(path.read_text())
            results[name] = {
                k: metrics[k] for k in ("top1", "top5", "best_top1", "epochs", "wall_time_s", "trained_parameters")
            }
    summary = {
        "checkpoint": cfg.checkpoint,
        "runs": results,
        "settings": asdict(cfg),
        "data": {"name": cfg.data, "image_size": cfg.image_size, "subset": cfg.subset, "val_subset": cfg.val_subset},
        **started(out),  # hardware and commit of the first start
        "collected_at_commit": git_commit(),
    }
    (out / RESULTS).write_text(json.dumps(summary, indent=2) + "\n")
    if results:
        save_figure(results_figure(summary), out / "results.png")
    return summary


def results_figure(summary: dict[str, Any]) -> CourseFigure:
    """Top-1 accuracy of every run (left) and of partial fine-tuning against tuned blocks (right)."""
    runs = summary["runs"]
    fig = CourseFigure(figsize=(11, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(1.3, 1))
    names = [n for n in ("linprobe_random", "linprobe", "partial_mlp", "finetune_scratch", "finetune") if n in runs]
    names += sorted(
        (n for n in runs if n.startswith("partial_") and n != "partial_mlp"), key=lambda n: int(n.split("_")[1])
    )
    bars = left.barh(
        names,
        [runs[n]["top1"] for n in names],
        color=["0.6" if "random" in n or "scratch" in n else "C0" for n in names],
    )
    left.bar_label(bars, fmt="%.1f", padding=3, fontsize=8)
    left.set(xlabel="top-1 accuracy (%)", title="the MAE encoder (blue) against baselines (grey)")
    left.invert_yaxis()
    points = [(0, runs["linprobe"]["top1"])] if "linprobe" in runs else []
    points += sorted(
        (int(n.split("_")[1]), r["top1"]) for n, r in runs.items() if n.startswith("partial_") and n != "partial_mlp"
    )
    if points:
        right.plot(*zip(*points, strict=True), "o-", label="last k blocks tuned")
    if "finetune" in runs:
        right.axhline(runs["finetune"]["top1"], color="C1", ls="--", label="full fine-tuning")
    if "finetune_scratch" in runs:
        right.axhline(runs["finetune_scratch"]["top1"], color="0.5", ls=":", label="from scratch")
    if "partial_mlp" in runs:
        right.plot([0.5], [runs["partial_mlp"]["top1"]], "s", color="C2", label="last block's MLP only")
    right.set(
        xlabel="blocks fine-tuned (0 = linear probe)",
        ylabel="top-1 (%)",
        title="partial fine-tuning (paper's Figure 9)",
    )
    right.legend(fontsize=8)
    return fig
