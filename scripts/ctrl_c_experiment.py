"""Ctrl-C in the middle of a pretraining step, at several steps: does --resume give the losses and
final weights of an uninterrupted run?

    python scripts/ctrl_c_experiment.py [--steps 3 9 14 20] [--subset 384] [--out runs/ctrl_c]

The SIGINT is sent from inside the step's forward pass, after the step drew its crops and masks:
the moment where stopping at once would save random generators that are one step ahead of the
saved position. Prints one line per moment and writes OUT/ctrl_c.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

from mae_course.checkpoint import load_checkpoint
from mae_course.model.mae import MaskedAutoencoder
from mae_course.provenance import provenance
from mae_course.train.pretrain import PretrainConfig, pretrain

SMALL = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[3, 9, 14, 20])
    parser.add_argument("--subset", type=int, default=384)
    parser.add_argument("--out", type=Path, default=Path("runs/ctrl_c"))
    opts = parser.parse_args()

    def config(folder: str, **kw) -> PretrainConfig:
        return PretrainConfig(
            output_dir=str(opts.out / folder),
            subset=opts.subset,
            batch_size=32,
            epochs=2,
            warmup_epochs=0.5,
            model_overrides=dict(SMALL),
            blr=1e-2,
            log_every=1,
            vis_images=0,
            device="cpu",
            overwrite=True,
            **kw,
        )

    reference: list[float] = []
    pretrain(config("reference"), on_step=lambda s, loss: reference.append(loss))
    weights = load_checkpoint(opts.out / "reference" / "model.safetensors")["model"]
    real, rows = MaskedAutoencoder.forward_loss, []
    for at in opts.steps:
        calls = []

        def signal_inside(self, imgs, pred, mask, at=at, calls=calls):
            calls.append(self.training)
            if sum(calls) == at:
                os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of step `at`
            return real(self, imgs, pred, mask)

        MaskedAutoencoder.forward_loss = signal_inside
        first: list[float] = []
        try:
            pretrain(config(f"stopped_in_step_{at}"), on_step=lambda s, loss, into=first: into.append(loss))
        except KeyboardInterrupt:
            pass
        finally:
            MaskedAutoencoder.forward_loss = real
        saved = load_checkpoint(opts.out / f"stopped_in_step_{at}" / "checkpoint-last.pth")["step"]
        rest: list[float] = []
        cfg = config(f"stopped_in_step_{at}", resume="auto")
        cfg.overwrite = False
        pretrain(cfg, on_step=lambda s, loss, into=rest: into.append(loss))
        resumed = load_checkpoint(opts.out / f"stopped_in_step_{at}" / "model.safetensors")["model"]
        losses = first[:saved] + rest
        row = {
            "signal_inside_step": at,
            "saved_at_step": saved,
            "identical_losses": losses == reference,
            "max_loss_difference": max(abs(a - b) for a, b in zip(losses, reference, strict=True)),
            "max_weight_difference": max((resumed[k] - weights[k]).abs().max().item() for k in weights),
        }
        rows.append(row)
        print(json.dumps(row))
    (opts.out / "ctrl_c.json").write_text(json.dumps({"runs": rows, **provenance()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
