"""Ctrl-C a real pretraining run at several moments, resume it, and compare with an uninterrupted run.

    python scripts/ctrl_c_experiment.py OUT [--moments 0.5 1.7 3.1] [--epochs 2] [--subset 4096]

For each moment (seconds after the run logged its first step), the run gets a SIGINT, is resumed
with --resume, and its per-step losses, epoch means and final weights are compared with the
uninterrupted run's. Prints one line per moment and writes OUT/ctrl_c.json. The tests check the
same on a tiny model (tests/test_interrupts.py); this is the full-size check of the README's
promise, with the default CPU model on the built-in data.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from mae_course.checkpoint import load_checkpoint


def run(out: Path, args: list[str], extra: list[str] = (), moment: float | None = None) -> tuple[int, float | None]:
    """Run pretrain into ``out``; with ``moment``, send SIGINT that long after the first logged step."""
    command = [sys.executable, "-m", "mae_course", "pretrain", *args, "--output-dir", str(out), *extra]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if moment is None:
        return proc.wait(), None
    log = out / "log.jsonl"
    while proc.poll() is None and not (log.exists() and '"step"' in log.read_text()):
        time.sleep(0.01)
    time.sleep(moment)
    proc.send_signal(signal.SIGINT)
    code = proc.wait()
    ckpt = out / "checkpoint-last.pth"
    return code, load_checkpoint(ckpt)["step"] if ckpt.exists() else None


def records(out: Path, key: str) -> list[float]:
    return [r[key] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if key in r]


def max_weight_difference(a: Path, b: Path) -> float:
    x, y = load_checkpoint(a / "model.pth")["model"], load_checkpoint(b / "model.pth")["model"]
    return max((x[k].float() - y[k].float()).abs().max().item() for k in x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--moments", type=float, nargs="+", default=[0.5, 1.7, 3.1, 4.4, 5.9])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=4096)
    opts = parser.parse_args()
    args = ["--epochs", str(opts.epochs), "--subset", str(opts.subset), "--log-every", "1", "--vis-images", "0",
            "--device", "cpu"]  # fmt: skip
    reference = opts.out / "reference"
    assert run(reference, args)[0] == 0
    rows = []
    for k, moment in enumerate(opts.moments):
        out = opts.out / f"interrupted_{k}"
        code, step = run(out, args, moment=moment)
        resumed = run(out, args, ["--resume"])[0] if step is not None else None
        row = {"moment_s": moment, "exit_code": code, "stopped_at_step": step, "resume_exit_code": resumed}
        if resumed == 0:
            row.update(same_losses=records(out, "loss") == records(reference, "loss"),
                       same_epoch_means=records(out, "train_loss") == records(reference, "train_loss"),
                       max_weight_difference=max_weight_difference(out, reference))  # fmt: skip
        rows.append(row)
        print(json.dumps(row))
    summary = {"torch": torch.__version__, "pid": os.getpid(), "args": args, "runs": rows}
    (opts.out / "ctrl_c.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
