"""The pretraining command under torchrun: 2 CPU processes (gloo) on the built-in data."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SMALL = (
    '{"embed_dim": 64, "depth": 2, "num_heads": 2, "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}'
)
COMMON = [
    "pretrain",
    "--subset",
    "1024",
    "--vis-images",
    "0",
    "--log-every",
    "4",
    "--model-overrides",
    SMALL,
    "--seed",
    "0",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores


def torchrun(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "mae_course",
        *args,
    ]


def single(*args: str) -> list[str]:
    return [sys.executable, "-m", "mae_course", *args]


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def epoch_losses(folder: Path) -> list[float]:
    return [r["train_loss"] for r in records(folder) if "train_loss" in r]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc): torchrun starts each worker in a session of its own."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def run(command: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    run(single(*COMMON, "--epochs", "4", "--batch-size", "64", "--output-dir", str(tmp_path / "one")))
    result = run(
        torchrun(
            *COMMON, "--epochs", "4", "--batch-size", "32", "--check-grad-sync", "--output-dir", str(tmp_path / "two")
        )
    )
    assert "x 2 processes" in result.stdout and "effective batch 64" in result.stdout

    logged = records(tmp_path / "two")
    assert [r["grad_sync_max_diff"] for r in logged if "step" in r] == [0.0] * 16  # every rank, every step
    one, two = epoch_losses(tmp_path / "one"), epoch_losses(tmp_path / "two")
    assert len(one) == len(two) == 4 and two[-1] < two[0]
    # Same images per global step; only the masks differ (each rank draws its own), so close, not equal.
    assert two == pytest.approx(one, rel=0.05)
    # Only rank 0 wrote: one log line per logged step, one checkpoint.
    assert len([r for r in logged if "step" in r]) == 16
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_resume_after_a_kill_under_torchrun(tmp_path):
    args = (*COMMON, "--epochs", "5", "--batch-size", "32")
    run(torchrun(*args, "--output-dir", str(tmp_path / "whole")))

    killed = tmp_path / "killed"
    process = subprocess.Popen(torchrun(*args, "--output-dir", str(killed)), env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.time() + 180
    while not (killed / "checkpoint-last.pth").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    for pid in [process.pid, *descendants(process.pid)]:  # torchrun and both workers (own sessions), mid-run
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()
    done_before = len(epoch_losses(killed))
    assert 1 <= done_before < 5, "the kill should land after the first checkpoint and before the end"

    result = run(torchrun(*args, "--output-dir", str(killed), "--resume"))
    assert "x 2 processes" in result.stdout
    resumed = epoch_losses(killed)
    whole = epoch_losses(tmp_path / "whole")
    assert resumed[-(5 - done_before) :] == pytest.approx(whole[done_before:], rel=1e-5)


def test_the_slurm_example_uses_real_flags():
    """The SLURM script parses as bash and every flag it passes exists in the pretrain command."""
    import re

    from mae_course.cli import build_parser

    script = Path(__file__).resolve().parents[1] / "scripts" / "slurm_pretrain_imagenet.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    ours = text.split("-m mae_course pretrain", 1)[1]
    flags = set(re.findall(r"(--[a-z][a-z-]+)", ours))
    parser = build_parser()
    pretrain = parser._subparsers._group_actions[0].choices["pretrain"]
    known = {option for action in pretrain._actions for option in action.option_strings}
    assert flags and flags <= known, flags - known
    for torchrun_flag in ("--nnodes", "--nproc_per_node", "--rdzv_id", "--rdzv_backend c10d", "--rdzv_endpoint"):
        assert torchrun_flag in text
