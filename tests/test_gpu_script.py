"""The one GPU run, rehearsed: scripts/gpu_measurements.sh runs every step, tiny, on the CPU, so that the
lent GPU's few minutes cannot be lost to a typo; and its time, worked out beforehand, fits them."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mae_course.errors import ConfigError
from mae_course.experiments.budget import Assumptions, bench_seconds

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_measurements.sh"
STEPS = ("throughput_vit_b", "throughput_vit_l", "table2", "e2e")


def script(out: Path, mode: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "JPEGS": str(out / "jpegs"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(SCRIPT), str(out), mode], capture_output=True, text=True, env=env, timeout=600)


def test_every_step_of_the_gpu_script_runs_in_a_rehearsal(tmp_path):
    """About 90 s: the same command lines, tiny models on the CPU, the compiled rows left out."""
    result = script(tmp_path, "--rehearse")
    assert result.returncode == 0, result.stderr[-2000:]
    status = (tmp_path / "steps.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in status] == list(STEPS)
    assert all(": exit 0 after" in line for line in status), status
    for name in STEPS:
        results = json.loads((tmp_path / f"{name}.json").read_text())
        assert results["rows"] and not [r for r in results["rows"] if "error" in r], name
        assert results["git_commit"] and results["hardware"]["torch"]
    vit_b = json.loads((tmp_path / "throughput_vit_b.json").read_text())
    assert all(0 <= r["profile"]["matmul_share"] <= 1 for r in vit_b["rows"])  # the profiled suite
    assert {r["implementation"] for r in vit_b["rows"]} == {"fast-eager", "peer", "plain"}
    assert json.loads((tmp_path / "provenance.json").read_text())["git_commit"]


def test_the_gpu_script_fits_the_time_a_gpu_is_lent(tmp_path):
    """A lent GPU gives 10 minutes a command and about 15 in all, start-up included: the script is planned to
    take under 8 minutes on an H100 or H200, and each step under 10 even if everything is 1.5 times slower."""
    result = script(tmp_path, "--estimate")
    assert result.returncode == 0, result.stderr[-2000:]
    estimates = dict(re.findall(r"^(\w+): (\d+ \d+) s", result.stdout, re.MULTILINE))
    assert list(estimates) == list(STEPS)
    expected = sum(int(v.split()[0]) for v in estimates.values())
    cautious = [int(v.split()[1]) for v in estimates.values()]
    assert expected < 8 * 60 and max(cautious) < 10 * 60 and sum(cautious) < 11 * 60, (expected, cautious)


def test_the_estimate_counts_steps_compilations_and_start_up():
    a = Assumptions()
    base = ["bench", "--suite", "model", "--models", "mae_vit_base_patch16", "--batch-sizes", "256"]
    one = bench_seconds([*base, "--implementations", "plain", "--steps", "10", "--warmup", "0"], a)
    two = bench_seconds([*base, "--implementations", "plain", "--steps", "20", "--warmup", "0"], a)
    step = (two - one) / 10  # ViT-B at batch 256, float32 at 12% of 989 TFLOP/s: 256 x 58.7 GFLOP / 119 TFLOP/s
    assert step == pytest.approx(256 * 58.7e9 / (0.12 * 989.4e12), rel=1e-2)
    assert one == pytest.approx(a.startup_s + a.build_s + 10 * step)
    compiled = bench_seconds([*base, "--implementations", "fast", "--steps", "10", "--warmup", "0"], a)
    assert compiled - a.compile_s < one  # a compilation, then faster steps
    assert bench_seconds(base, a.cautious()) == pytest.approx(1.5 * bench_seconds(base, a), rel=0.02)
    with pytest.raises(ConfigError, match="only bench commands"):
        bench_seconds(["pretrain"])
