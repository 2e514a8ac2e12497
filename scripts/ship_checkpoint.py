"""Turn a finished pretraining run into the course's shipped checkpoint (a maintainer's tool).

    python scripts/ship_checkpoint.py RUN_DIR NAME "THE COMMAND THAT MADE THE RUN"

Writes, in data/checkpoints/:
    NAME.safetensors  the run's final weights in float16, with its model config in the header
    NAME.json         provenance: the command, the full config, the final loss, wall time, hardware,
                      the git commit it was trained at, and the file's sha256
    NAME.log.jsonl    the run's training log, as written

float16 halves the file; the lessons load it into float32 models, and a test checks that the
reconstructions match the float32 weights closely.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mae_course.checkpoint import load_checkpoint, save_weights  # noqa: E402
from mae_course.train.run import final_model  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "data" / "checkpoints"


def main(run_dir: str, name: str, command: str) -> None:
    run = Path(run_dir)
    ckpt = load_checkpoint(final_model(run))
    half = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    target = OUT / f"{name}.safetensors"
    save_weights(half, ckpt["config"], target, config_json=False)  # NAME.json, below, holds the config
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in log if "train_loss" in r]
    steps = [r for r in log if "step" in r]
    provenance = {
        "command": command,
        "config": ckpt["config"],
        "final_train_loss": epochs[-1]["train_loss"],
        "steps": steps[-1]["step"],
        "training_time_s": round(sum(r["epoch_time_s"] for r in epochs), 1),
        "trained_on": {
            k: v for k, v in json.loads((run / "config.json").read_text()).items() if k in ("hardware", "git_commit")
        },
        "weights": f"float16 copy of the run's final weights ({final_model(run).name})",
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "size_bytes": target.stat().st_size,
    }
    (OUT / f"{name}.json").write_text(json.dumps(provenance, indent=2) + "\n")
    shutil.copyfile(run / "log.jsonl", OUT / f"{name}.log.jsonl")
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB) with its provenance and log")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    torch.set_grad_enabled(False)
    main(*sys.argv[1:])
