"""Lesson 09: how long a benchmark will take on a GPU, worked out before it runs.

    python -m mae_course.experiments.budget bench --suite model --models mae_vit_base_patch16 --batch-sizes 64 256

A GPU lent or rented by the minute is no place to find out that a measurement takes twice the time
it has. A ``bench`` command's time is its start-up, then for each measurement: building the model,
compiling it (when it is compiled), and its steps, ``(warmup + timed + profiled) x step time``, where
the step time follows from the FLOPs per image (:func:`~mae_course.experiments.flops.mae_flops`), the
batch size and an assumed MFU for each implementation. The assumptions (:class:`Assumptions`) are
stated guesses, with a cautious variant 1.5 times slower in everything, to see the margin.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..config import add_options, from_args
from ..errors import ConfigError
from ..model.registry import MODEL_CONFIGS
from .flops import mae_flops


@dataclass(frozen=True)
class Assumptions:
    """What a measurement's time is estimated from, for one H100 or H200: expected values, not measured
    ones (no GPU has run this code yet). :meth:`cautious` is the same with everything slower."""

    peak_tflops: float = 989.4  # dense bf16, H100 SXM / H200
    mfu: dict[str, float] = field(
        default_factory=lambda: {  # the share of the peak each implementation reaches
            "fast": 0.40,
            "peer-compiled": 0.35,
            "fast-eager": 0.30,
            "peer": 0.25,
            "plain": 0.12,
        }
    )
    startup_s: float = 12.0  # Python, torch, the CUDA context, transformers' import
    build_s: float = 3.0  # building a model and its optimizer, moving it to the GPU
    profile_s: float = 3.0  # profiling a row's few steps and writing its trace
    compile_s: float = 20.0  # one row's blocks, cold: an encoder and a decoder block, forward and backward
    jpegs_per_s: float = 400.0  # generated ImageNet-sized JPEGs written per second (all cores)
    cpu_pipeline_images_per_s: float = 1500.0  # PIL decoding and augmenting on a server's cores
    gpu_pipeline_images_per_s: float = 5000.0  # nvjpeg and the batched crops

    def cautious(self) -> Assumptions:
        """Everything 1.5 times slower: the MFUs two thirds as high, start-up and compilation 1.5 times as long."""
        return Assumptions(
            self.peak_tflops,
            {k: v / 1.5 for k, v in self.mfu.items()},
            1.5 * self.startup_s,
            1.5 * self.build_s,
            1.5 * self.profile_s,
            1.5 * self.compile_s,
            self.jpegs_per_s / 1.5,
            self.cpu_pipeline_images_per_s / 1.5,
            self.gpu_pipeline_images_per_s / 1.5,
        )


def step_seconds(config: dict, batch: int, implementation: str, a: Assumptions, mask_ratio: float = 0.75) -> float:
    """One training step of ``batch`` images at the assumed MFU of ``implementation``."""
    return batch * mae_flops(config, mask_ratio).train_step / (a.mfu[implementation] * a.peak_tflops * 1e12)


def bench_seconds(argv: Sequence[str], a: Assumptions | None = None) -> float:
    """The estimated wall time of ``python -m mae_course bench ARGS`` (``argv``: "bench", then ARGS)."""
    from .bench import BenchConfig

    a = a or Assumptions()
    argv = list(argv)
    if argv[:1] != ["bench"]:
        raise ConfigError(f"only bench commands are estimated, not {' '.join(argv[:1]) or 'nothing'}")
    parser = argparse.ArgumentParser(prog="mae_course bench")
    add_options(parser, BenchConfig)
    args = parser.parse_args(argv[1:])
    suite = from_args(BenchConfig, args).suite_config()
    seconds = a.startup_s
    if args.suite == "model":
        for name in suite.models:
            config = {**MODEL_CONFIGS[name], **(suite.model_overrides or {})}
            for batch in suite.batch_sizes:
                for impl in suite.implementations:
                    steps = suite.warmup + suite.steps + (suite.profile_steps if suite.profile else 0)
                    compiled = impl in ("fast", "peer-compiled")
                    seconds += a.build_s + compiled * a.compile_s + steps * step_seconds(config, batch, impl, a)
                    seconds += a.profile_s if suite.profile else 0
    elif args.suite == "table2":
        config = {**MODEL_CONFIGS[suite.model], **(suite.model_overrides or {})}
        impl = "fast" if suite.compile else "fast-eager"
        for depth in suite.decoder_depths:
            asymmetric = {**config, "decoder_depth": depth}
            with_tokens = {**asymmetric, "mask_token_in_encoder": True}
            rounds = suite.warmup + suite.steps
            seconds += 2 * (a.build_s + suite.compile * a.compile_s) + rounds * (
                step_seconds(asymmetric, suite.batch_size, impl, a)
                + step_seconds(with_tokens, suite.batch_size, impl, a)
            )
    else:  # e2e: the folder, the model alone, then per pipeline its loader alone and the training it feeds
        config = {**MODEL_CONFIGS[suite.model], "img_size": suite.image_size, **(suite.model_overrides or {})}
        step = step_seconds(config, suite.batch_size, "fast" if suite.compile else "fast-eager", a)
        batches = suite.warmup + suite.steps
        seconds += (suite.generate / a.jpegs_per_s if suite.data is None else 0) + a.build_s
        seconds += suite.compile * a.compile_s + batches * step
        for pipeline in suite.pipelines:
            rate = a.cpu_pipeline_images_per_s if pipeline == "cpu" else a.gpu_pipeline_images_per_s
            seconds += 2 * 5.0  # starting the loader's workers, twice
            seconds += batches * suite.batch_size / rate + batches * max(step, suite.batch_size / rate)
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    """Print the expected and the cautious seconds of one bench command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    print(f"{bench_seconds(argv):.0f} {bench_seconds(argv, Assumptions().cautious()):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
