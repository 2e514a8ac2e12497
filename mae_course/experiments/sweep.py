"""Lesson 08: ablations as one resumable command: vary one pretraining setting, evaluate each result.

    python -m mae_course sweep --ratios 0.1 0.25 0.4 0.5 0.6 0.75 0.9          # the paper's Figure 5
    python -m mae_course sweep --ablation decoder_depth --values 1 2 4          # Table 1a
    python -m mae_course sweep --ablation mask_token_in_encoder --values false true   # Table 1c
    python -m mae_course sweep --ablation epochs --values 10 20 40              # Figure 7, in miniature
    python -m mae_course sweep --ablation embed_dim --values 64 128 192 --stages pretrain finetune scratch
                                                                                # Figure 8, in miniature

For every value, everything else fixed: pretrain an MAE, linear-probe it, fine-tune it, and (stage
``scratch``) train the same encoder from random weights with the fine-tuning settings, the
baseline of Figure 8. Each stage runs in a folder of its own
(``<output>/<setting>=<value>/{pretrain,linprobe,finetune,scratch}``), and a
finished stage is never redone, so an interrupted sweep continues where it stopped (an interrupted
pretraining resumes from its checkpoint). The settings every stage shares are recorded in
``sweep.json``; continuing under other settings is refused. ``results.json`` collects the
per-value metrics and wall times with the settings, the data, the hardware and the git commit;
``results.png`` plots them.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..config import check_types, from_mapping, option
from ..errors import ConfigError
from ..evaluation.classify import METRICS
from ..evaluation.finetune import FinetuneConfig, finetune
from ..evaluation.linprobe import LinprobeConfig, linprobe
from ..figures import CourseFigure, save_figure
from ..train.pretrain import PretrainConfig, pretrain
from ..train.run import LOG, JsonLog, final_model
from ..train.stages import Stages, classifier_results, stage_time

RESULTS = "results.json"
SETTINGS = "sweep.json"
# What must stay the same for finished stages to be kept; values, stages and device may change.
FIXED = ("ablation", "data", "data_root", "image_size", "seed", "pretrain", "linprobe", "finetune")

# setting -> (where it lives in the pretraining config, how a command-line value is read)
ABLATIONS: dict[str, tuple[str, type]] = {
    "mask_ratio": ("mask_ratio", float),  # Figure 5
    "decoder_depth": ("model_overrides", int),  # Table 1a
    "decoder_embed_dim": ("model_overrides", int),  # Table 1b (decoder width)
    "mask_token_in_encoder": ("mask_token_in_encoder", bool),  # Table 1c
    "norm_pix_loss": ("norm_pix_loss", bool),  # Table 1d
    "augment": ("augment", str),  # Table 1e
    "mask_sampling": ("mask_sampling", str),  # Table 1f
    "epochs": ("epochs", int),  # Figure 7: the length of pretraining
    "embed_dim": ("model_overrides", int),  # Figure 8: the encoder's width (the decoder stays as it is)
    "depth": ("model_overrides", int),  # Figure 8: the encoder's depth
}
STAGES = ("pretrain", "linprobe", "finetune", "scratch")


def parse_value(ablation: str, text: str) -> Any:
    kind = ABLATIONS[ablation][1]
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{ablation} takes true or false, got {text!r}")
        return text.lower() in ("true", "1", "yes")
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{ablation} takes {kind.__name__} values, got {text!r}") from None


@dataclass
class SweepConfig:
    """One ablation: which setting, which values, and the shared settings of every stage."""

    ablation: str = option("mask_ratio", "the setting to vary", choices=tuple(ABLATIONS))
    values: tuple[Any, ...] = option((0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9), "its values", metavar="V")
    output_dir: str = option("runs/sweep", "the sweep's folder")
    data: str = option(
        "builtin", "builtin (generated, no download), cifar10, stl10, imagenette, or an ImageFolder path"
    )
    data_root: str | None = option(None, "where named datasets live (default: ~/.cache/mae_course/datasets)")
    image_size: int = option(32, "input side in pixels")
    seed: int = option(0, "seed of every stage")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    pretrain: dict[str, Any] = option({}, "pretraining settings, e.g. '{\"epochs\": 20}'", metavar="JSON")
    linprobe: dict[str, Any] = option({}, "linear-probe settings", metavar="JSON")
    finetune: dict[str, Any] = option({}, "fine-tuning settings", metavar="JSON")
    stages: tuple[str, ...] = option(
        ("pretrain", "linprobe", "finetune"),
        "the stages of each value (scratch: the fine-tuning from random weights)",
        choices=STAGES,
    )

    def validate(self) -> None:
        """Check every setting of every stage before any work (the stages' checkpoints do not exist yet)."""
        if self.ablation not in ABLATIONS:
            raise ConfigError(f"unknown ablation {self.ablation!r}; choose one of {', '.join(ABLATIONS)}")
        check_types(self, "sweep")
        if not self.values:
            raise ConfigError("give at least one value to sweep")
        kind = ABLATIONS[self.ablation][1]
        for value in self.values:
            number = isinstance(value, int | float) and not isinstance(value, bool)
            ok = {bool: isinstance(value, bool), int: number and isinstance(value, int), float: number}.get(kind)
            if not (ok if ok is not None else isinstance(value, kind)):
                raise ConfigError(f"{self.ablation} takes {kind.__name__} values, got {value!r}")
        if len({folder_name(self.ablation, v) for v in self.values}) != len(self.values):
            raise ConfigError(f"the values repeat: {list(self.values)}")
        if "pretrain" not in self.stages or set(self.stages) - set(STAGES):
            raise ConfigError("stages are pretrain (always) plus any of linprobe, finetune and scratch")
        for value in self.values:
            for stage, run_config in stage_configs(self, value).items():
                (run_config if stage == "pretrain" else replace(run_config, checkpoint=None)).validate()


def folder_name(ablation: str, value: Any) -> str:
    return f"{ablation}={str(value).lower() if isinstance(value, bool) else value}"


# Settings of sweep itself, given to every stage: --pretrain / --linprobe / --finetune must not set them again.
SHARED = ("data", "data_root", "image_size", "seed", "device")


def stage_configs(cfg: SweepConfig, value: Any) -> dict[str, Any]:
    """The three runs for one value of the swept setting."""
    root = Path(cfg.output_dir) / folder_name(cfg.ablation, value)
    common = {name: getattr(cfg, name) for name in SHARED}
    fixed = {name: f"sweep's --{name.replace('_', '-')}" for name in (*SHARED, "output_dir", "checkpoint")}
    key = ABLATIONS[cfg.ablation][0]
    if key != "model_overrides" and key in cfg.pretrain:
        fixed[key] = f"the swept --ablation {cfg.ablation}"
    pre = replace(
        from_mapping(PretrainConfig, cfg.pretrain, "--pretrain", fixed), **common, output_dir=str(root / "pretrain")
    )
    if key == "model_overrides":
        pre.model_overrides = {**pre.model_overrides, cfg.ablation: value}
    else:
        setattr(pre, key, value)
    weights = str(final_model(root / "pretrain"))  # model.pth in a folder made before safetensors
    configs: dict[str, Any] = {"pretrain": pre}
    if "linprobe" in cfg.stages:
        configs["linprobe"] = replace(
            from_mapping(LinprobeConfig, cfg.linprobe, "--linprobe", fixed),
            **common,
            checkpoint=weights,
            output_dir=str(root / "linprobe"),
        )
    if "finetune" in cfg.stages:
        configs["finetune"] = replace(
            from_mapping(FinetuneConfig, cfg.finetune, "--finetune", fixed),
            **common,
            checkpoint=weights,
            output_dir=str(root / "finetune"),
        )
    if "scratch" in cfg.stages:  # the pretrained architecture, from random weights, with the same budget
        configs["scratch"] = replace(
            from_mapping(FinetuneConfig, cfg.finetune, "--finetune", fixed),
            **common,
            model=pre.model,
            model_overrides=dict(pre.model_overrides),
            output_dir=str(root / "scratch"),
        )
    return configs


def fixed_settings(cfg: SweepConfig) -> dict[str, Any]:
    """The settings that every run of one sweep shares."""
    return {name: getattr(cfg, name) for name in FIXED}


def _recorded_in_results(out: Path) -> dict[str, Any] | None:
    """The settings of a sweep written before sweep.json existed, from its results.json."""
    path = out / RESULTS
    return {k: json.loads(path.read_text())["settings"][k] for k in FIXED} if path.exists() else None


def done_file(stage: str, run_config: Any) -> str:
    """The file that says a stage has finished: its final weights (pretraining) or its metrics."""
    return final_model(run_config.output_dir).name if stage == "pretrain" else METRICS


def sweep(cfg: SweepConfig) -> dict[str, Any]:
    """Run every stage not finished yet, value by value; returns (and writes) the results."""
    cfg.validate()
    jobs = {"pretrain": pretrain, "linprobe": linprobe, "finetune": finetune, "scratch": finetune}
    with Stages(cfg.output_dir, SETTINGS, fixed_settings(cfg), "a sweep", _recorded_in_results) as stages:
        for value in cfg.values:
            for stage, run_config in stage_configs(cfg, value).items():
                stages.run(
                    f"{folder_name(cfg.ablation, value)} {stage}", jobs[stage], run_config, done_file(stage, run_config)
                )
            collect(cfg, stages)  # results.json grows value by value
        return collect(cfg, stages)


def collect(cfg: SweepConfig, stages: Stages) -> dict[str, Any]:
    """Gather the finished stages into results.json and results.png."""
    out = stages.out
    runs: dict[str, Any] = {}
    for value in cfg.values:
        entry: dict[str, Any] = {}
        for stage, run_config in stage_configs(cfg, value).items():
            folder = Path(run_config.output_dir)
            if not (folder / done_file(stage, run_config)).exists():
                continue
            timing = stage_time(folder)
            if stage == "pretrain":
                epochs = [r for r in JsonLog(folder / LOG).read() if "train_loss" in r]
                times = [r["epoch_time_s"] for r in epochs]
                entry["pretrain"] = {
                    "final_loss": epochs[-1]["train_loss"],
                    "epochs": len(epochs),
                    "train_time_s": sum(times),
                    **timing,
                    # robust to an interrupted, resumed run or a busy machine for a while
                    "median_epoch_time_s": statistics.median(times),
                }
            else:
                entry[stage] = classifier_results(folder)
        if entry:
            runs[str(value)] = entry
    results = {
        "ablation": cfg.ablation,
        "values": [str(v) for v in cfg.values],
        "runs": runs,
        "settings": asdict(cfg),
        "data": {"name": cfg.data, "image_size": cfg.image_size},
    }
    results = stages.write_results(results, RESULTS)
    if runs:
        save_figure(sweep_figure(results), out / "results.png")
    return results


# The numbers the paper states for Figure 5 (ViT-L, ImageNet-1K top-1); the other points exist only as a plot.
PAPER_FIGURE5 = {"finetune": {0.1: 83.2, 0.75: 84.9}, "linprobe": {0.1: 54.6, 0.75: 73.5}, "scratch": 82.5}

# The paper's Table 1 (ViT-L, 800 epochs, ImageNet-1K top-1): setting -> value -> (fine-tune, linear probe).
# The paper's defaults are decoder depth 8, width 512, no mask tokens in the encoder, pixel target
# (norm-pix in Table 3), random-size crop, random sampling; the default row is 84.9 / 73.5.
PAPER_TABLE1: dict[str, dict[str, tuple[float, float]]] = {
    "decoder_depth": {"1": (84.8, 65.5), "2": (84.9, 70.0), "4": (84.9, 71.9), "8": (84.9, 73.5), "12": (84.4, 73.3)},
    "decoder_embed_dim": {
        "128": (84.9, 69.1),
        "256": (84.8, 71.3),
        "512": (84.9, 73.5),
        "768": (84.4, 73.1),
        "1024": (84.3, 73.1),
    },
    "mask_token_in_encoder": {"False": (84.9, 73.5), "True": (84.2, 59.6)},
    "norm_pix_loss": {"False": (84.9, 73.5), "True": (85.4, 73.9)},
    "augment": {"none": (84.0, 65.7), "fixed-crop": (84.7, 73.1), "crop": (84.9, 73.5), "crop+jitter": (84.3, 71.9)},
    "mask_sampling": {"random": (84.9, 73.5), "block": (82.8, 63.9), "grid": (84.0, 66.0)},  # block at 75%
}


AXIS_LABELS = {
    "mask_ratio": "masking ratio",
    "epochs": "pretraining epochs",
    "decoder_depth": "decoder depth",
    "decoder_embed_dim": "decoder width",
    "embed_dim": "encoder width",
    "depth": "encoder depth",
}


def sweep_figure(
    results: dict[str, Any], paper: bool | None = None, baselines: dict[str, float] | None = None
) -> CourseFigure:
    """Fine-tune and linear-probe accuracy against the swept value (Figure 5 for mask_ratio).

    The top row is the course's measurement, with ``baselines`` (e.g. ``{"finetune": from-scratch
    top-1, "linprobe": random-encoder top-1}``) drawn on the same axes; a second row, with its own
    axes, shows what the paper states for the same setting (ViT-L on ImageNet), on the same number
    of points per unit height so that slopes compare.
    """
    ablation, runs = results["ablation"], results["runs"]
    values = [v for v in results["values"] if v in runs]
    numeric = ABLATIONS[ablation][1] in (int, float)  # counts and ratios on a value axis; the rest as categories
    xs = [float(v) for v in values] if numeric else list(range(len(values)))
    stages = (("finetune", "fine-tuning"), ("linprobe", "linear probing"))
    measured = [s for s in stages if any(s[0] in runs[v] for v in values)]
    stages = tuple(measured) or stages  # a probe-only sweep gets no empty fine-tuning panel
    stated = {stage: paper_points(ablation, stage, values) for stage, _ in stages} if paper is not False else {}
    rows = 2 if any(stated.values()) else 1
    fig = CourseFigure(figsize=(5 * len(stages), 3.3 * rows), layout="constrained")
    axes = fig.subplots(rows, len(stages), squeeze=False)
    for col, (stage, title) in enumerate(stages):
        ax = axes[0, col]
        points = [(x, runs[v][stage]["top1"]) for x, v in zip(xs, values, strict=True) if stage in runs[v]]
        if points:
            ax.plot(*zip(*points, strict=True), "o-", label="this course (mini MAE, built-in data)")
        else:
            ax.text(0.5, 0.5, f"no {title} runs yet", ha="center", va="center", transform=ax.transAxes, color="0.5")
        if baselines and stage in baselines:
            name = "from scratch" if stage == "finetune" else "random encoder"
            ax.axhline(baselines[stage], color="0.5", ls="--", lw=1, label=f"{name}, same budget")
        ax.set(title=f"{title}: top-1 vs {AXIS_LABELS.get(ablation, ablation)}", ylabel="top-1 accuracy (%)")
        if ax.lines:
            ax.legend(loc="best", fontsize=8)
        if rows == 2:
            theirs = axes[1, col]
            marks = {(float(v) if numeric else xs[values.index(v)]): acc for v, acc in stated[stage].items()}
            if marks:
                theirs.plot(list(marks), list(marks.values()), "s", color="C3", label="the paper (ViT-L, ImageNet-1K)")
            if ablation == "mask_ratio" and stage == "finetune":
                theirs.axhline(PAPER_FIGURE5["scratch"], color="C3", ls=":", lw=1, label="the paper: from scratch")
            theirs.set(ylabel="the paper's top-1 (%)")
            if theirs.lines:
                theirs.legend(loc="best", fontsize=8)
                if points:
                    same_scale(ax, theirs)
        for a in axes[:, col]:
            a.set_xlabel(AXIS_LABELS.get(ablation, ablation))
            if not numeric or ablation != "mask_ratio":  # categories and counts: a tick per run
                a.set_xticks(xs, values)
            else:
                a.set_xlim(0, 1)
    return fig


def same_scale(*axes: Any, min_span: float = 6.0) -> None:
    """Give the axes the same number of points per unit height, so that slopes compare honestly.

    Each axis stays centred on its own data; the shared span fits the widest data (and at least
    ``min_span`` points, so that a 0.1-point difference is not drawn as a cliff).
    """
    ranges = []
    for ax in axes:
        ys = [y for line in ax.lines for y in line.get_ydata()]
        ranges.append((min(ys), max(ys)))
    span = max(min_span, *(1.2 * (hi - lo) for lo, hi in ranges))
    for ax, (lo, hi) in zip(axes, ranges, strict=True):
        middle = (lo + hi) / 2
        ax.set_ylim(middle - span / 2, middle + span / 2)


def paper_points(ablation: str, stage: str, values: list[str]) -> dict[Any, float]:
    """The paper's stated top-1 for ``stage`` ("finetune" or "linprobe") at those of ``values`` it reports."""
    if ablation == "mask_ratio":
        return dict(PAPER_FIGURE5[stage])
    column = 0 if stage == "finetune" else 1
    table = PAPER_TABLE1.get(ablation, {})
    return {v: table[v][column] for v in values if v in table}
