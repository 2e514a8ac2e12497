"""Lesson 08: the paper's Table 2, timed: ``python -m mae_course bench --suite table2``.

It measures the paper's Table 2 claim on your own hardware: the time of a full
pretraining step (forward, backward, AdamW update) of the asymmetric encoder, which sees only the
visible patches, against the "encoder with mask tokens" baseline, which sees them all, for decoder
depths 8 and 1, in the same run. It reports step times, images per second and the speed-up ratio,
next to the ratio of the two FLOP counts (:mod:`mae_course.experiments.flops`). Results go to a JSON file with
the hardware and software versions.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..errors import ConfigError, NonFiniteLossError
from ..model.registry import MODEL_CONFIGS, build_model, check_mask_ratio, check_model_settings
from ..provenance import git_commit, hardware
from ..train.distributed import resolve_device
from ..train.recipe import make_adamw
from ..train.step import make_train_step
from .flops import mae_flops
from .timing import alternating_seconds, ratio

# The paper's measurements (Table 2: ViT-L, 800 epochs on 128 TPU-v3 cores, wall-clock hours).
PAPER_TABLE2 = {
    "ViT-L, encoder with mask tokens": 42.4,
    "ViT-L, decoder depth 8": 15.4,
    "ViT-L, decoder depth 1": 11.6,
    "ViT-H, decoder depth 8": 34.5,
    "ViT-H, decoder depth 1": 29.3,
}
PAPER_SPEEDUPS = {"ViT-L depth 8": 2.8, "ViT-L depth 1": 3.7, "ViT-H depth 8": 3.5, "ViT-H depth 1": 4.1}


@dataclass
class Table2Config:
    model: str = "mae_vit_large_patch16"
    decoder_depths: tuple[int, ...] = (8, 1)
    batch_size: int = 2
    steps: int = 3  # timed rounds, one step of each encoder per round
    warmup: int = 1  # untimed rounds first
    mask_ratio: float = 0.75
    device: str = "auto"
    amp: str = "auto"
    compile: bool = False
    model_overrides: dict[str, Any] | None = None  # e.g. a narrower model for a quick CPU check

    def validate(self) -> None:
        overrides = self.model_overrides or {}
        varied = sorted({"decoder_depth", "mask_token_in_encoder"} & set(overrides))
        if varied:
            raise ConfigError(
                f"the table2 suite varies {', '.join(varied)} itself (--decoder-depths, both encoders); "
                "leave it out of --model-overrides"
            )
        check_mask_ratio(self.mask_ratio, check_model_settings(self.model, overrides))
        if self.batch_size < 1 or self.steps < 1 or self.warmup < 0 or not self.decoder_depths:
            raise ConfigError("batch size and steps must be at least 1, warmup at least 0, and a decoder depth given")
        if any(d < 1 for d in self.decoder_depths):
            raise ConfigError(f"decoder depths must be at least 1, got {list(self.decoder_depths)}")


def table2(cfg: Table2Config) -> dict[str, Any]:
    """Asymmetric vs mask-token encoder, per decoder depth, timed in one run.

    For each depth both models are built, and their training steps (the loop's own,
    :func:`mae_course.train.step.make_train_step`, with its AdamW) take turns: ``cfg.steps``
    rounds of one step each, after ``cfg.warmup`` untimed rounds. Each round gives one ratio;
    the speed-up is their median, with the lowest and the highest beside it.
    """
    cfg.validate()
    device = resolve_device(cfg.device)
    torch.manual_seed(0)
    size = {**MODEL_CONFIGS[cfg.model], **(cfg.model_overrides or {})}["img_size"]
    imgs = torch.randn(cfg.batch_size, 3, size, size, device=device)
    rows = []
    for depth in cfg.decoder_depths:
        steps, flops, losses = {}, {}, {}
        for variant, in_encoder in (("asymmetric", False), ("mask_tokens_in_encoder", True)):
            settings = {**(cfg.model_overrides or {}), "decoder_depth": depth, "mask_token_in_encoder": in_encoder}
            model = build_model(cfg.model, **settings).to(device)
            step = make_train_step(
                model, make_adamw(model, lr=1e-4), mask_ratio=cfg.mask_ratio, amp=cfg.amp, compile=cfg.compile
            )
            steps[variant] = lambda step=step, variant=variant, losses=losses: losses.__setitem__(variant, step(imgs))
            flops[variant] = mae_flops(model.config, cfg.mask_ratio).train_step
        seconds = alternating_seconds(steps, rounds=cfg.steps, warmup=cfg.warmup)
        if not all(torch.isfinite(loss).item() for loss in losses.values()):
            raise NonFiniteLossError(f"the loss became non-finite while timing decoder depth {depth}")
        row: dict[str, Any] = {"decoder_depth": depth}
        for variant, times in seconds.items():
            median = statistics.median(times)
            row[variant] = {
                "step_s": median,
                "images_per_s": cfg.batch_size / median,
                "gflops_per_image": flops[variant] / 1e9,
            }
        speedup = ratio(seconds["mask_tokens_in_encoder"], seconds["asymmetric"])
        row.update(
            speedup=speedup.median,
            speedup_low=speedup.low,
            speedup_high=speedup.high,
            rounds=speedup.rounds,
            flop_ratio=flops["mask_tokens_in_encoder"] / flops["asymmetric"],
        )
        rows.append(row)
        del steps
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {
        "suite": "table2",
        "rows": rows,
        "paper_speedups": PAPER_SPEEDUPS,
        "settings": asdict(cfg),
        "hardware": hardware(),
        "git_commit": git_commit(),
    }


def table2_text(results: dict[str, Any]) -> str:
    """A printable table of a table2 result."""
    model = results["settings"]["model"]
    lines = [
        f"{model}, batch {results['settings']['batch_size']}, on {results['hardware']['device']}",
        f"{'decoder depth':>13} {'asymmetric':>14} {'with [M]':>14} {'speed-up':>9} {'FLOP ratio':>11}",
    ]
    for row in results["rows"]:
        spread = f"   (rounds: {row['speedup_low']:.2f}x to {row['speedup_high']:.2f}x)" if "speedup_low" in row else ""
        asymmetric, mask_tokens = (row[k]["step_s"] * 1000 for k in ("asymmetric", "mask_tokens_in_encoder"))
        lines.append(
            f"{row['decoder_depth']:>13} {asymmetric:>11.0f} ms {mask_tokens:>11.0f} ms "
            f"{row['speedup']:>8.2f}x {row['flop_ratio']:>10.2f}x{spread}"
        )
    return "\n".join(lines)
