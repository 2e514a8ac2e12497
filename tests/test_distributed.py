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
import torch

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
    process = subprocess.Popen(
        torchrun(*args, "--output-dir", str(killed)),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
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


def test_the_slurm_example_does_not_oversubscribe_the_cores(monkeypatch):
    """It asked for 8 processes x 10 workers on 64 cores. The processes, their workers and their threads now fit."""
    import re

    from mae_course.data import datasets

    text = (Path(__file__).resolve().parents[1] / "scripts" / "slurm_pretrain_imagenet.sh").read_text()
    cores = int(re.search(r"--cpus-per-task=(\d+)", text).group(1))
    processes = int(re.search(r"GPUS_PER_NODE:-(\d+)", text).group(1))
    threads = int(re.search(r"OMP_NUM_THREADS:-(\d+)", text).group(1))
    asked = re.search(r"--num-workers (\d+)", text)
    monkeypatch.setattr(datasets, "cpu_cores", lambda: cores)
    workers = datasets.loader_workers("/datasets/imagenet", int(asked.group(1)) if asked else None, processes=processes)
    assert processes * (workers + threads) <= cores, (processes, workers, threads, cores)


def _draw_as_a_rank(rank: int, folder: str, pipeline: str, port: int, out: str) -> None:
    """One process of a 2-process gloo group: the first training batch of epoch 0 and its masks, as the
    pretrainer makes them (PretrainingImages' loader, the model's masking after seeding with seed + rank)."""
    import torch.distributed as dist
    from torch.utils.data import DistributedSampler

    from mae_course.data.batches import PretrainingImages
    from mae_course.model.registry import build_model
    from mae_course.train.distributed import init_runtime, shutdown
    from mae_course.train.engine import epoch_indices

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_WORLD_SIZE="2",
    )
    torch.set_num_threads(1)
    rt = init_runtime("cpu")
    torch.manual_seed(0 + rt.rank)  # what pretrain() does
    images = PretrainingImages(folder, 32, rt.device, pipeline)
    sampler = DistributedSampler(images.dataset, rt.world_size, rt.rank, shuffle=True, seed=0, drop_last=True)
    batches = images.loader(4, num_workers=1 if pipeline == "cpu" else 0, seed=0, rank=rt.rank)
    (imgs,) = next(iter(batches.epoch(0, epoch_indices(sampler, 0))))
    model = build_model("mae_vit_tiny_patch4_32")
    _, mask, _ = model.forward_encoder(imgs)
    gathered = [None, None]
    dist.all_gather_object(gathered, (imgs, mask))
    if rt.is_main:
        torch.save(gathered, out)
    shutdown()


def test_every_rank_draws_its_own_crops_and_masks(tmp_path, pipeline="cpu"):
    """Two gloo processes on a folder of one picture copied 16 times: the same images, so any difference
    is the randomness. The loaders' seeds had no rank in them: with workers, both ranks cropped and
    flipped alike. Now their crops differ in the same epoch, and so do their masks. (The GPU pipeline's
    per-rank seeds: tests/test_training_loader.py, in one process.)"""
    import torch.multiprocessing as mp

    from tests.conftest import write_images

    root = write_images(tmp_path / "one", {"a/a_0.JPEG": (96, 80)})
    picture = (root / "a" / "a_0.JPEG").read_bytes()
    for k in range(16):
        path = tmp_path / "images" / "ab"[k % 2] / f"{'ab'[k % 2]}_{k}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(picture)
    out = tmp_path / "drawn.pt"
    port = 29500 + os.getpid() % 1000 + (pipeline == "gpu")
    mp.start_processes(
        _draw_as_a_rank, args=(str(tmp_path / "images"), pipeline, port, str(out)), nprocs=2, start_method="spawn"
    )
    (imgs0, mask0), (imgs1, mask1) = torch.load(out)
    assert imgs0.shape == imgs1.shape == (4, 3, 32, 32)
    for a, b in zip(imgs0, imgs1, strict=True):
        assert not torch.allclose(a, b)  # the same picture, cropped differently on each rank
    assert not torch.equal(mask0, mask1)


def _grad_disagreement_as_a_rank(rank: int, port: int, out: str) -> None:
    """One process of a 2-process gloo group whose gradients have the same norm on both ranks but
    not the same entries (rank 1 holds rank 0's gradient reversed), then the same gradients."""
    import torch.distributed as dist

    from mae_course.train.distributed import grad_disagreement

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    layer = torch.nn.Linear(3, 2)
    weight_grad = torch.arange(6.0).view(2, 3)
    layer.weight.grad = weight_grad.flip(-1) if rank == 1 else weight_grad.clone()
    layer.bias.grad = torch.tensor([1.0, -2.0])
    different = grad_disagreement(layer)
    layer.weight.grad = weight_grad.clone()
    same = grad_disagreement(layer)
    if rank == 0:
        torch.save((different, same), out)
    dist.destroy_process_group()


def test_grad_sync_check_compares_the_gradients_themselves(tmp_path):
    """--check-grad-sync promises that all processes hold the same gradients. It compared their norms,
    which agree for gradients that differ entry by entry (a permutation, a sign); now every entry counts."""
    import torch.multiprocessing as mp

    out = tmp_path / "diff.pt"
    port = 28500 + os.getpid() % 1000
    mp.start_processes(_grad_disagreement_as_a_rank, args=(port, str(out)), nprocs=2, start_method="spawn")
    different, same = torch.load(out)
    assert different == 2.0  # the largest entry-wise difference: |0 - 2| (the weight's first row reversed)
    assert same == 0.0
