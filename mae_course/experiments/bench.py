"""Lessons 08-09: the ``bench`` command, one of three benchmarks of pretraining steps.

    table2   the asymmetric encoder against the encoder with mask tokens, per decoder depth (Table 2)
    model    images/s, step time, MFU and memory of the fast path, the plain path and the peer
             (transformers' ViTMAEForPreTraining), compiled and eager alike, per model and batch size
    e2e      whether the CPU or the GPU data pipeline keeps up with the model

:class:`BenchConfig` holds the command's options; ``SUITES`` says which of them each suite takes
(an option left at None takes the suite's own default). :func:`bench` runs the suite and writes
the JSON results, with the output file locked against a second writer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ..config import check_types, option
from ..errors import ConfigError
from ..model.registry import MODEL_CONFIGS
from ..safe_files import FolderLock, atomic_write_json
from ..train.step import AMP_MODES
from .e2e import PIPELINES, EndToEndConfig, e2e_text, end_to_end
from .table2 import Table2Config, table2, table2_text
from .throughput import IMPLEMENTATIONS, ThroughputConfig, throughput, throughput_text


class Suite(NamedTuple):
    config: type  # the suite's own settings
    run: Callable[[Any], dict[str, Any]]  # settings -> results
    text: Callable[[dict[str, Any]], str]  # results -> their table
    options: tuple[str, ...]  # the bench options it takes as they are (beside --models and --batch-sizes)


_SHARED = ("mask_ratio", "device", "model_overrides", "steps", "warmup")
SUITES = {
    "table2": Suite(Table2Config, table2, table2_text, (*_SHARED, "decoder_depths", "amp", "compile")),
    "model": Suite(
        ThroughputConfig, throughput, throughput_text, (*_SHARED, "implementations", "peak_tflops", "tf32", "profile")
    ),
    "e2e": Suite(
        EndToEndConfig,
        end_to_end,
        e2e_text,
        (*_SHARED, "data", "generate", "generate_dir", "pipelines", "image_size", "num_workers", "amp", "compile"),
    ),
}
T2, TP, E2E = Table2Config(), ThroughputConfig(), EndToEndConfig()  # their defaults, for the help
E2E_GROUP = "e2e suite (one --model and one --batch-size)"


@dataclass
class BenchConfig:
    suite: str = option(
        "table2",
        "table2: the asymmetric encoder against the encoder with mask tokens, per decoder "
        "depth; model: images/s, step time, MFU and memory of the fast path, the plain path and the peer "
        "(transformers' ViTMAEForPreTraining), per model and batch size; e2e: whether the CPU or the GPU "
        "data pipeline keeps up with the model",
        choices=tuple(SUITES),
    )
    models: tuple[str, ...] | None = option(
        None,
        f"table2: one model (default {T2.model}); model: several (default {' '.join(TP.models)})",
        choices=tuple(MODEL_CONFIGS),
        aliases=("--model",),
    )
    model_overrides: dict[str, Any] | None = option(None, "e.g. a narrower model for a quick check", metavar="JSON")
    batch_sizes: tuple[int, ...] | None = option(
        None,
        f"table2: one (default {T2.batch_size}); model: several (default {' '.join(map(str, TP.batch_sizes))})",
        aliases=("--batch-size",),
    )
    steps: int | None = option(
        None, f"timed steps per measurement (default: table2 {T2.steps}, model {TP.steps}, e2e {E2E.steps})"
    )
    warmup: int | None = option(
        None, f"untimed steps first (default: table2 {T2.warmup}, model {TP.warmup}, e2e {E2E.warmup})"
    )
    mask_ratio: float = option(0.75, "fraction of the patches removed")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    amp: str = option("auto", "table2 and e2e suites", choices=AMP_MODES)
    compile: bool = option(False, "table2 and e2e suites: torch.compile the models' blocks (fast path)", negatable=True)
    output: str | None = option(None, "where the JSON results go (default runs/bench/SUITE.json)")
    decoder_depths: tuple[int, ...] = option(T2.decoder_depths, "decoder depths to time", group="table2 suite")
    implementations: tuple[str, ...] = option(
        IMPLEMENTATIONS, "the implementations to time", group="model suite", choices=IMPLEMENTATIONS
    )
    peak_tflops: float | None = option(
        None,
        "the device's peak dense 16-bit TFLOP/s for MFU (default: from the "
        "datasheet of the GPU's exact name; none for an unknown GPU)",
        group="model suite",
    )
    tf32: bool = option(
        True,
        "TF32 tensor cores for float32 matrix products (recorded in the results)",
        group="model suite",
        negatable=True,
    )
    profile: str | None = option(
        None,
        "a folder: a torch.profiler trace of a few more steps of each row, and the "
        "share of device time in matrix products and attention",
        group="model suite",
        metavar="DIR",
    )
    data: str | None = option(None, "an ImageFolder of JPEGs (default: generate one)", group=E2E_GROUP)
    generate: int = option(E2E.generate, "images to generate without --data", group=E2E_GROUP)
    generate_dir: str = option(E2E.generate_dir, "where the generated images go", group=E2E_GROUP)
    pipelines: tuple[str, ...] = option(PIPELINES, "the data pipelines to measure", group=E2E_GROUP, choices=PIPELINES)
    image_size: int = option(E2E.image_size, "input side in pixels", group=E2E_GROUP)
    num_workers: int | None = option(None, "DataLoader workers (default: one per spare core)", group=E2E_GROUP)

    def suite_config(self) -> Table2Config | ThroughputConfig | EndToEndConfig:
        """The suite's own settings: the options it takes, and its own defaults for those left at None."""
        check_types(self, "bench")
        settings = {name: getattr(self, name) for name in SUITES[self.suite].options}
        if self.suite == "model":
            settings.update(models=self.models, batch_sizes=self.batch_sizes)
        elif any(v is not None and len(v) != 1 for v in (self.models, self.batch_sizes)):
            raise ConfigError(f"the {self.suite} suite takes one --model and one --batch-size")
        else:
            settings.update(model=self.models and self.models[0], batch_size=self.batch_sizes and self.batch_sizes[0])
        cfg = SUITES[self.suite].config(**{name: value for name, value in settings.items() if value is not None})
        cfg.validate()
        return cfg


def output_path(cfg: BenchConfig) -> Path:
    """Where the results go; refuses a folder, or a parent that is a file, before any measurement."""
    path = Path(cfg.output or f"runs/bench/{cfg.suite}.json").expanduser()
    if path.is_dir():
        raise ConfigError(f"--output {path} is a folder; give the path of a JSON file")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(f"--output {path}: {parent} is a file, not a folder")
    return path


def bench(cfg: BenchConfig) -> tuple[dict[str, Any], str, Path]:
    """Run the chosen suite; returns (results, their table as text, the JSON file written)."""
    suite = cfg.suite_config()
    path = output_path(cfg)
    with FolderLock(path.parent, "--output", name=f".{path.name}.lock"):
        results = SUITES[cfg.suite].run(suite)
        atomic_write_json(path, results)
    return results, SUITES[cfg.suite].text(results), path
