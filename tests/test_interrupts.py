"""Every way a run can stop, and what it leaves: Ctrl-C at any moment resumes exactly, a lost final
file is written again, the log has no duplicates or broken lines, and one folder has one writer."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mae_course.checkpoint import load_checkpoint
from mae_course.cli import main
from mae_course.errors import ConfigError, NonFiniteLossError
from mae_course.safe_files import FolderLock
from mae_course.train.pretrain import PretrainConfig, pretrain
from tests.conftest import TINY_OVERRIDES, key_words, recorder

ARGS = [
    "--subset",
    "192",
    "--batch-size",
    "32",
    "--epochs",
    "2",
    "--warmup-epochs",
    "0.5",
    "--blr",
    "1e-2",
    "--log-every",
    "1",
    "--vis-images",
    "0",
    "--device",
    "cpu",
    "--model-overrides",
    json.dumps(TINY_OVERRIDES),
]


def records(folder: Path, key: str) -> list:
    return [r[key] for r in map(json.loads, (folder / "log.jsonl").read_text().splitlines()) if key in r]


def start(folder: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mae_course", "pretrain", *ARGS, "--output-dir", str(folder), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_steps(folder: Path, steps: int, proc: subprocess.Popen) -> None:
    """Until the run has logged ``steps`` steps (it is training, past its set-up)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (folder / "log.jsonl").exists() and len(records(folder, "step")) >= steps:
            return
        time.sleep(0.005)
    raise AssertionError(f"the run did not reach step {steps}: {proc.communicate()}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the same command: its per-step losses, epoch losses and final weights."""
    folder = tmp_path_factory.mktemp("reference")
    proc = start(folder)
    assert proc.wait(timeout=300) == 0, proc.communicate()
    return folder


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_checkpoint(a / "model.safetensors")["model"], load_checkpoint(b / "model.safetensors")["model"]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize("after_step", [2, 6, 9])
def test_ctrl_c_at_any_moment_resumes_exactly(tmp_path, reference, after_step):
    """SIGINT to the command while it trains: it stops at the end of that step, saves, exits with 130;
    --resume then gives the uninterrupted run's losses, epoch means and final weights, bit for bit."""
    folder = tmp_path / "run"
    proc = start(folder)
    wait_for_steps(folder, after_step, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Ctrl-C: stopping at the end of this step" in err and "Traceback" not in err
    stopped = load_checkpoint(folder / "checkpoint-last.pth")["step"]
    assert f"interrupted at step {stopped}" in out or f"interrupted after epoch {stopped // 6}" in out
    resumed = start(folder, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.communicate()
    assert records(folder, "loss") == records(reference, "loss")  # every step, no duplicates
    assert records(folder, "train_loss") == records(reference, "train_loss")  # each epoch's mean covers all of it
    assert same_weights(folder, reference)


def test_a_second_ctrl_c_stops_at_once_keeping_the_last_checkpoint(tmp_path):
    cfg = PretrainConfig(
        output_dir=str(tmp_path / "run"),
        subset=192,
        batch_size=32,
        epochs=2,
        warmup_epochs=0.5,
        model_overrides=dict(TINY_OVERRIDES),
        log_every=1,
        vis_images=0,
        device="cpu",
    )
    reference, on_step = recorder()
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN under a shell's background job
    pretrain(PretrainConfig(**{**cfg.__dict__, "output_dir": str(tmp_path / "ref")}), on_step=on_step)

    def twice(step, loss):
        if step == 8:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, on_step=twice)
    assert load_checkpoint(tmp_path / "run" / "checkpoint-last.pth")["step"] == 6  # the end of epoch 1
    rest, on_step = recorder()
    cfg.resume = "auto"
    pretrain(cfg, on_step=on_step)
    assert rest == reference[6:]
    assert signal.getsignal(signal.SIGINT) is before  # the run's handler is gone, the caller's is back


def test_lost_final_files_are_written_when_resumed(tmp_path, capsys):
    """A run killed while writing model.safetensors resumed as 'already finished, nothing to do' and never wrote it."""
    cfg = PretrainConfig(
        output_dir=str(tmp_path / "run"),
        subset=64,
        batch_size=32,
        epochs=1,
        model_overrides=dict(TINY_OVERRIDES),
        vis_images=2,
        device="cpu",
    )
    pretrain(cfg)
    out = tmp_path / "run"
    (out / "model.safetensors").unlink()
    (out / "loss.png").unlink()
    (out / f".model.safetensors.tmp-{os.getpid() + 1}").write_bytes(b"half a checkpoint")  # what the kill left
    with (out / "log.jsonl").open("a") as log:
        log.write('{"step": 3, "lo')  # killed in the middle of a line
    capsys.readouterr()
    summary = pretrain(PretrainConfig(**{**cfg.__dict__, "resume": "auto"}))
    assert "wrote the missing model.safetensors, loss.png" in capsys.readouterr().out and summary["finished_before"]
    assert (out / "model.safetensors").exists() and (out / "loss.png").exists()
    assert not list(out.glob(".*.tmp-*"))
    assert all(line.endswith("}") for line in (out / "log.jsonl").read_text().splitlines())  # the broken line dropped
    pretrain(PretrainConfig(**{**cfg.__dict__, "resume": "auto"}))
    assert "nothing to do" in capsys.readouterr().out


def test_after_a_kill_the_log_has_no_duplicate_steps(tmp_path):
    cfg = PretrainConfig(
        output_dir=str(tmp_path / "run"),
        subset=192,
        batch_size=32,
        epochs=2,
        model_overrides=dict(TINY_OVERRIDES),
        log_every=1,
        vis_images=0,
        device="cpu",
    )
    _, on_step = recorder(stop_at=9, how="kill")  # steps 7-8 logged, the checkpoint at 6
    with pytest.raises(SystemExit):
        pretrain(cfg, on_step=on_step)
    assert records(tmp_path / "run", "step")[-1] == 8
    cfg.resume = "auto"
    pretrain(cfg)
    assert records(tmp_path / "run", "step") == list(range(1, 13))
    assert len(records(tmp_path / "run", "train_loss")) == 2


def test_the_last_update_of_an_epoch_is_checked_before_saving(tmp_path, monkeypatch):
    """With one step per epoch, weights made infinite by that step's update (whose loss, computed
    before it, is finite) used to be saved as the 'last good' checkpoint."""
    from mae_course.train.step import TrainStep

    update, steps = TrainStep.update, []

    def poisoning(self):
        update(self)
        steps.append(1)
        if len(steps) == 2:  # the update of epoch 2's only step
            with torch.no_grad():
                next(self.module.parameters()).fill_(float("inf"))

    monkeypatch.setattr(TrainStep, "update", poisoning)
    cfg = PretrainConfig(
        output_dir=str(tmp_path / "run"),
        subset=32,
        batch_size=32,
        epochs=3,
        model_overrides=dict(TINY_OVERRIDES),
        vis_images=0,
        device="cpu",
    )
    with pytest.raises(NonFiniteLossError, match="weights became NaN or infinite in the update of step 2 .*kept at"):
        pretrain(cfg)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint-last.pth")
    assert ckpt["step"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    """Two runs started seconds apart into one folder both exited 0, their logs interleaved."""
    first = start(tmp_path / "run", "--epochs", "40")
    wait_for_steps(tmp_path / "run", 1, first)
    second = start(tmp_path / "run", "--overwrite")  # even told to start over, it may not while another writes
    out, err = second.communicate(timeout=120)
    assert second.returncode == 2 and err.count("\n") == 1
    assert f"is in use by another run (process {first.pid})" in err
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=120) == 130
    steps = records(tmp_path / "run", "step")
    assert steps == list(range(1, len(steps) + 1))  # one writer: every step once, in order


WRITERS = {
    "pretrain": ["pretrain", "--output-dir", "{out}"],
    "linprobe": ["linprobe", "--output-dir", "{out}"],
    "finetune": ["finetune", "--output-dir", "{out}"],
    "partial-finetune": ["partial-finetune", "--blocks", "1", "--output-dir", "{out}"],
    "evaluate": ["evaluate", "--output-dir", "{out}"],
    "sweep": ["sweep", "--output-dir", "{out}", "--pretrain", '{{"epochs": 1}}'],
    "bench": ["bench", "--output", "{out}/t2.json", "--model", "mae_vit_mini_patch4_32"],
    "prepare": ["prepare", "{src}", "{out}"],
}


@pytest.mark.parametrize("command", list(WRITERS))
def test_every_writing_command_locks_its_folder(tmp_path, capsys, command, image_folder):
    src = image_folder()
    out = tmp_path / "out"
    argv = [a.format(out=out, src=src) for a in WRITERS[command]]
    lock = tmp_path / "out" if command != "bench" else tmp_path / "out"
    name = ".t2.json.lock" if command == "bench" else ".lock"
    with FolderLock(lock, name=name):
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"is in use by another run (process {os.getpid()})" in err, err


def test_the_lock_is_refused_with_the_holder_named():
    with pytest.raises(ConfigError, match=r"in use by another run \(process \d+\)"):
        folder = Path(__import__("tempfile").mkdtemp())
        with FolderLock(folder), FolderLock(folder):
            pass


@pytest.mark.parametrize("inside_step", [3, 8])
def test_ctrl_c_in_the_middle_of_a_step_resumes_exactly(tmp_path, monkeypatch, inside_step):
    """The signal arrives after the step drew its crops and masks: the old run stopped right there and
    saved generators that had already drawn them (resumed losses off by up to 0.08, weights by 1e-2)."""
    from mae_course.model.mae import MaskedAutoencoder

    cfg = PretrainConfig(
        output_dir=str(tmp_path / "ref"),
        subset=192,
        batch_size=32,
        epochs=2,
        warmup_epochs=0.5,
        model_overrides=dict(TINY_OVERRIDES),
        log_every=1,
        vis_images=0,
        device="cpu",
    )
    reference, on_step = recorder()
    pretrain(cfg, on_step=on_step)
    real, calls = MaskedAutoencoder.forward_loss, []

    def signal_inside(self, imgs, pred, mask):
        calls.append(self.training)
        if sum(calls) == inside_step:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, imgs, pred, mask)

    monkeypatch.setattr(MaskedAutoencoder, "forward_loss", signal_inside)
    cfg.output_dir = str(tmp_path / "run")
    first, on_step = recorder()
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, on_step=on_step)
    assert len(first) == inside_step  # the step in progress was finished, then saved
    monkeypatch.setattr(MaskedAutoencoder, "forward_loss", real)
    rest, on_step = recorder()
    cfg.resume = "auto"
    pretrain(cfg, on_step=on_step)
    assert first + rest == reference
    assert same_weights(tmp_path / "run", tmp_path / "ref")


# ---------------------------------------------------------------------------------------- a folder holds one run


def tiny_run(folder: Path, **settings) -> PretrainConfig:
    return PretrainConfig(
        **{
            "output_dir": str(folder),
            "subset": 64,
            "batch_size": 32,
            "epochs": 1,
            "log_every": 1,
            "model_overrides": dict(TINY_OVERRIDES),
            "vis_images": 0,
            "device": "cpu",
            **settings,
        }
    )


def test_an_interrupted_overwrite_leaves_nothing_of_the_old_run(tmp_path):
    """Killed a few steps into `--overwrite`, the folder held the new config and log beside the old
    checkpoint, weights and figures; --resume then said 'already finished' with the old weights."""
    out = tmp_path / "run"
    pretrain(tiny_run(out, vis_images=2))
    old = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert {"checkpoint-last.pth", "model.safetensors", "loss.png", "reconstructions.png"} <= set(old)
    _, on_step = recorder(stop_at=2, how="kill")  # step 1 logged, no checkpoint yet
    with pytest.raises(SystemExit):
        pretrain(tiny_run(out, vis_images=2, overwrite=True, epochs=2, seed=1), on_step=on_step)
    left = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert sorted(left) == ["config.json", "log.jsonl", "reconstructions_untrained.png"]  # the new run's, only
    assert all(left[name] != old[name] for name in left)
    with pytest.raises(FileNotFoundError, match="nothing to resume: no checkpoint"):
        pretrain(tiny_run(out, vis_images=2, resume="auto", epochs=2, seed=1))


@pytest.mark.parametrize("left", ["config.json", "log.jsonl", "model.safetensors", "model.pth", "metrics.json"])
def test_a_folder_that_lost_its_checkpoint_still_holds_a_run(tmp_path, left):
    """Without checkpoint-last.pth, a finished folder (a finetune's metrics.json, say) was silently overwritten."""
    out = tmp_path / "run"
    out.mkdir()
    (out / left).write_bytes(b"the earlier run's")
    with pytest.raises(
        ConfigError,
        match=key_words("already holds a run", left, "checkpoint-last.pth", "--overwrite"),
    ):
        pretrain(tiny_run(out))
    assert [p.name for p in out.iterdir()] == [left] and (out / left).read_bytes() == b"the earlier run's"


# ---------------------------------------------------------------------------------------- resuming with another batch


@pytest.fixture(scope="module")
def stopped_at_step_2(tmp_path_factory):
    """A run of 2 epochs x 4 steps of 32 images, uninterrupted (ref/) and stopped by Ctrl-C after step 2 (run/)."""
    root = tmp_path_factory.mktemp("batch")
    cfg = tiny_run(root / "ref", subset=128, epochs=2, warmup_epochs=0.5)
    pretrain(cfg)
    _, on_step = recorder(stop_at=2)
    with pytest.raises(KeyboardInterrupt):
        pretrain(replace(cfg, output_dir=str(root / "run")), on_step=on_step)
    return cfg, root


@pytest.mark.parametrize("change", [{"accum_iter": 2}, {"batch_size": 16}, {"batch_size": 64}, {"subset": 64}])
def test_resuming_with_another_effective_batch_is_refused(stopped_at_step_2, tmp_path, change, capsys):
    """--accum-iter 2 trained a whole epoch at lr 0; --batch-size 32 (from 64) restarted the warmup:
    a step of another size does not fit the saved step count and lr schedule."""
    cfg, root = stopped_at_step_2
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if not p.name.startswith(".")}
    argv = [
        "pretrain",
        "--output-dir",
        str(run),
        "--resume",
        "--subset",
        str(change.get("subset", 128)),
        "--batch-size",
        str(change.get("batch_size", 32)),
        "--accum-iter",
        str(change.get("accum_iter", 1)),
        "--epochs",
        "2",
        "--warmup-epochs",
        "0.5",
        "--log-every",
        "1",
        "--vis-images",
        "0",
        "--device",
        "cpu",
        "--model-overrides",
        json.dumps(TINY_OVERRIDES),
    ]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "\r" not in line]
    assert (
        len(err) == 1 and "cannot resume" in err[0] and "32 images per step (batch 32 x accum 1 x 1 process" in err[0]
    )
    assert "4 steps per epoch" in err[0] and "start over with --overwrite" in err[0], err
    assert {p.name: p.read_bytes() for p in run.iterdir() if not p.name.startswith(".")} == before  # nothing written


def test_the_same_effective_batch_split_otherwise_resumes_on_schedule(stopped_at_step_2, tmp_path):
    """--batch-size 16 --accum-iter 2 (less memory, the same 32 images per step) continues the schedule."""
    cfg, root = stopped_at_step_2
    shutil.copytree(root / "run", tmp_path / "run")
    pretrain(replace(cfg, output_dir=str(tmp_path / "run"), resume="auto", batch_size=16, accum_iter=2))
    assert records(tmp_path / "run", "step") == list(range(1, 9))
    assert records(tmp_path / "run", "lr") == records(root / "ref", "lr")
    assert len(records(tmp_path / "run", "train_loss")) == 2


# ---------------------------------------------------------------------------------------- odd log lines


def test_odd_log_lines_are_unreadable_lines_not_a_traceback(tmp_path, capsys):
    """Non-UTF-8 bytes, or a JSON line that is not an object, stopped --resume with a traceback."""
    from mae_course.train.run import JsonLog

    out = tmp_path / "run"
    pretrain(tiny_run(out))
    good = (out / "log.jsonl").read_bytes()
    with (out / "log.jsonl").open("ab") as log:
        log.write(b'\xff\xfe{"step": 1}\n[1, 2]\n"text"\n7\n{"step": "three"}\n{"epoch": [1]}\n')
    log = JsonLog(out / "log.jsonl")
    assert len(log.read()) == good.count(b"\n") and log.unreadable == 6
    capsys.readouterr()
    pretrain(tiny_run(out, resume="auto"))
    assert "nothing to do" in capsys.readouterr().out
    assert (out / "log.jsonl").read_bytes() == good  # the odd lines dropped, the rest kept
