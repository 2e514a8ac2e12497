import json
import math
from dataclasses import replace

import pytest
import torch

from mae_course import MaskedAutoencoder, build_model, load_checkpoint, load_model
from mae_course.checkpoint import atomic_save
from mae_course.errors import CheckpointError, ConfigError, DataError, NonFiniteLossError
from mae_course.train.pretrain import PretrainConfig, pretrain
from mae_course.train.recipe import lr_at
from tests.conftest import recorder

SMALL = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


def small_config(tmp_path, **overrides) -> PretrainConfig:
    values = dict(
        output_dir=str(tmp_path / "run"),
        subset=192,
        batch_size=32,
        epochs=2,
        warmup_epochs=0.5,
        model_overrides=dict(SMALL),
        blr=1e-2,
        log_every=2,
        vis_images=2,
        device="cpu",
    )
    values.update(overrides)
    return PretrainConfig(**values)


def test_run_writes_everything(tmp_path):
    cfg = small_config(tmp_path)
    summary = pretrain(cfg)
    out = tmp_path / "run"
    for name in (
        "config.json",
        "log.jsonl",
        "checkpoint-last.pth",
        "model.safetensors",
        "reconstructions_untrained.png",
        "reconstructions.png",
        "loss.png",
    ):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "step" in r]
    assert [r["step"] for r in steps] == [2, 4, 6, 8, 10, 12]  # 6 steps per epoch, log every 2
    assert all(r["images_per_s"] > 0 and math.isfinite(r["loss"]) for r in steps)
    assert [r["epoch"] for r in records if "train_loss" in r] == [1, 2]
    assert summary["last_loss"] < summary["first_loss"]
    model = load_model(out / "model.safetensors")
    assert isinstance(model, MaskedAutoencoder) and model.config["embed_dim"] == 32
    ckpt = load_checkpoint(out / "checkpoint-last.pth")
    assert ckpt["epoch"] == 2 and ckpt["step"] == 12 and ckpt["config"]["pretrain"]["blr"] == 1e-2
    trained = ckpt["model"]  # the weights at the end of training, as the resume state holds them
    assert model.state_dict().keys() == trained.keys()
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
    # the final weights' config (in their header) is the settings the run's config.json holds
    settings = json.loads((out / "config.json").read_text())
    final = load_checkpoint(out / "model.safetensors")["config"]
    assert final == {k: settings[k] for k in final} == json.loads(json.dumps(ckpt["config"]))  # betas: a list
    assert settings["model"]["decoder_depth"] == 1
    assert not (out / "model.json").exists() and not (out / "model.pth").exists()


def test_learning_rate_follows_warmup_and_cosine(tmp_path):
    cfg = small_config(tmp_path, log_every=1, accum_iter=2, batch_size=16, blr=2e-3)
    pretrain(cfg)
    steps = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in steps if "step" in r]
    peak = 2e-3 * (16 * 2) / 256  # effective batch = batch x accum
    total, warmup = 12, 3  # 192 images / 32 per step = 6 steps per epoch
    assert lrs == pytest.approx([lr_at(s, total, warmup, peak) for s in range(total)])
    assert lrs[0] == 0 and max(lrs) == pytest.approx(peak)


def test_resume_mid_epoch_gives_the_same_next_losses(tmp_path):
    reference, on_step = recorder()
    pretrain(small_config(tmp_path / "a"), on_step=on_step)

    cfg = small_config(tmp_path / "b")
    first, on_step = recorder(stop_at=8)  # Ctrl-C in the middle of epoch 2
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, on_step=on_step)
    ckpt = load_checkpoint(tmp_path / "b" / "run" / "checkpoint-last.pth")
    assert (ckpt["epoch"], ckpt["step"], ckpt["micro_in_epoch"]) == (1, 8, 2)
    rest, on_step = recorder()
    cfg.resume = "auto"
    pretrain(cfg, on_step=on_step)
    assert len(first) == 8 and len(rest) == 4
    assert first + rest == reference  # exactly: the same random draws, in the same order


def test_resume_after_a_kill_restarts_from_the_last_epoch_checkpoint(tmp_path):
    reference, on_step = recorder()
    pretrain(small_config(tmp_path / "a", epochs=3), on_step=on_step)

    cfg = small_config(tmp_path / "b", epochs=3)
    _, on_step = recorder(stop_at=9, how="kill")  # dies without saving, in epoch 2
    with pytest.raises(SystemExit):
        pretrain(cfg, on_step=on_step)
    assert load_checkpoint(tmp_path / "b" / "run" / "checkpoint-last.pth")["step"] == 6
    rest, on_step = recorder()
    cfg.resume = "auto"
    pretrain(cfg, on_step=on_step)
    assert rest == reference[6:]  # exactly


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = small_config(tmp_path, log_every=1)
    calls = {"n": 0}
    real_loss = MaskedAutoencoder.forward_loss

    def poisoned(self, imgs, pred, mask):
        calls["n"] += self.training  # figures run the model in eval mode: not counted
        loss = real_loss(self, imgs, pred, mask)
        return loss * float("nan") if calls["n"] > 8 else loss  # NaN from step 9, in epoch 2

    monkeypatch.setattr(MaskedAutoencoder, "forward_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="loss became nan by step 9 .*last good checkpoint is kept"):
        pretrain(cfg)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint-last.pth")
    assert ckpt["epoch"] == 1 and ckpt["step"] == 6
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_an_existing_run_is_never_overwritten_silently(tmp_path):
    cfg = small_config(tmp_path, epochs=1)
    pretrain(cfg)
    with pytest.raises(ConfigError, match="already holds a run .*--resume.*--overwrite"):
        pretrain(small_config(tmp_path, epochs=1))
    pretrain(small_config(tmp_path, epochs=1, overwrite=True))
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert sum('"train_loss"' in line for line in lines) == 1  # the old log was replaced


def test_resuming_a_finished_run_does_nothing(tmp_path, capsys):
    pretrain(small_config(tmp_path, epochs=1))
    summary = pretrain(small_config(tmp_path, epochs=1, resume="auto"))
    assert summary["finished_before"] and "already finished" in capsys.readouterr().out


def test_resume_with_other_model_settings_is_refused(tmp_path):
    pretrain(small_config(tmp_path, epochs=1))
    other = small_config(tmp_path, epochs=2, resume="auto", model_overrides={**SMALL, "decoder_depth": 2})
    with pytest.raises(CheckpointError, match="other model settings \\(decoder_depth differ"):
        pretrain(other)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(image_size=30), "image size 30 is not divisible by the patch size 4"),
        (dict(mask_ratio=1.0), "mask ratio must be between 0 and 1"),
        (dict(mask_ratio=0.99), "keeps no token"),
        (dict(epochs=0), "epochs must be at least 1"),
        (dict(warmup_epochs=5), "warmup epochs must be in"),
        (dict(blr=-1.0), "base lr must be a positive number"),
        (dict(model="mae_vit_giant"), "unknown model 'mae_vit_giant'"),
        (dict(augment="mixup"), "unknown augment 'mixup'; choose one of none, fixed-crop, crop, crop\\+jitter"),
        (dict(mask_sampling="stripes"), "unknown mask sampling 'stripes'"),
        (dict(model_overrides={"depthh": 2}), "cannot build model .*depthh"),
        (dict(device="tpu"), "unknown device 'tpu'"),
    ],
)
def test_bad_settings(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        pretrain(small_config(tmp_path, **overrides))


def test_bad_data(tmp_path):
    with pytest.raises(DataError, match="dataset not found: '/no/such/folder'"):
        pretrain(small_config(tmp_path, data="/no/such/folder"))
    with pytest.raises(DataError, match="fewer than one effective batch of 64"):
        pretrain(small_config(tmp_path, subset=40, batch_size=64))
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        pretrain(small_config(tmp_path, resume="auto"))


def test_image_folder_data(tmp_path, image_folder):
    images = image_folder(per_class=20, size=(40, 36))
    summary = pretrain(small_config(tmp_path, data=str(images), subset=None, image_size=16, epochs=1))
    assert summary["steps"] == 40 // 32


def test_gradient_accumulation_equals_one_big_batch():
    """Two micro-batches of 16 with accumulation give the gradient of one batch of 32."""
    from mae_course.train.recipe import make_adamw
    from mae_course.train.step import make_train_step

    torch.manual_seed(0)
    big = build_model("mae_vit_mini_patch4_32", **SMALL)
    accum = build_model("mae_vit_mini_patch4_32", **SMALL)
    accum.load_state_dict(big.state_dict())
    imgs, noise = torch.randn(32, 3, 32, 32), torch.rand(32, 64)

    def loss_with(noise_rows):
        return lambda module, x: module(x, mask_ratio=0.75, noise=noise_rows(x))[0]

    whole = make_train_step(big, make_adamw(big, 1e-3), loss_fn=loss_with(lambda x: noise), amp="none")
    halves = iter([noise[:16], noise[16:]])
    split = make_train_step(
        accum, make_adamw(accum, 1e-3), loss_fn=loss_with(lambda x: next(halves)), amp="none", accum_iter=2
    )
    whole.forward_backward(imgs)
    split.forward_backward(imgs[:16], sync=False)
    split.forward_backward(imgs[16:])
    for (name, p), q in zip(big.named_parameters(), accum.parameters(), strict=True):
        if p.requires_grad:
            assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-4), name


def test_bf16_autocast_runs(tmp_path):
    summary = pretrain(small_config(tmp_path, amp="bf16", epochs=1))
    assert math.isfinite(summary["last_loss"])


def test_a_run_that_cannot_start_leaves_nothing_behind(tmp_path):
    with pytest.raises(DataError):
        pretrain(small_config(tmp_path, data=str(tmp_path / "missing")))
    assert not (tmp_path / "run").exists()


def test_resume_with_more_epochs_says_what_changed(tmp_path, capsys):
    pretrain(small_config(tmp_path, epochs=1))
    summary = pretrain(small_config(tmp_path, epochs=2, resume="auto"))
    assert summary["steps"] == 12
    assert "resuming with changed settings: epochs 1 -> 2" in capsys.readouterr().out


@pytest.mark.parametrize("sampling", ["block", "grid"])
def test_resume_is_exact_for_block_and_grid_masking(tmp_path, sampling):
    """Their masks are drawn on the CPU; the reconstruction figure drawn at each save used to draw
    from the same global generator after its state was saved, so the resumed masks differed."""
    reference, on_step = recorder()
    pretrain(small_config(tmp_path / "a", mask_sampling=sampling), on_step=on_step)
    cfg = small_config(tmp_path / "b", mask_sampling=sampling)
    first, on_step = recorder(stop_at=8)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, on_step=on_step)
    rest, on_step = recorder()
    cfg.resume = "auto"
    pretrain(cfg, on_step=on_step)
    assert first + rest == reference


def test_a_checkpoint_of_another_process_count_is_reseeded_deterministically(tmp_path, capsys):
    """The random state of 2 processes cannot be split over 1: the run says so and reseeds from
    the seed, the process and the step, so that two such resumes agree (it used to carry on silently)."""
    cfg = small_config(tmp_path, epochs=2)
    _, on_step = recorder(stop_at=3)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, on_step=on_step)
    path = tmp_path / "run" / "checkpoint-last.pth"
    ckpt = load_checkpoint(path)
    ckpt["rng"] = [ckpt["rng"], ckpt["rng"]]  # as saved by a 2-process run
    torch.save(ckpt, path)
    runs = []
    for copy in ("x", "y"):
        folder = tmp_path / copy
        folder.mkdir()
        (folder / "checkpoint-last.pth").write_bytes(path.read_bytes())
        losses, on_step = recorder()
        pretrain(small_config(tmp_path, epochs=2, output_dir=str(folder), resume="auto"), on_step=on_step)
        runs.append(losses)
        notes = [r["note"] for r in map(json.loads, (folder / "log.jsonl").read_text().splitlines()) if "note" in r]
        assert len(notes) == 1 and "saved by 2 processes and this run has 1" in notes[0]
    assert runs[0] == runs[1] and len(runs[0]) == 12 - 3
    assert "reseeded from seed 0, the process and step 3" in capsys.readouterr().out


def test_resume_keeps_the_settings_of_the_earlier_parts(tmp_path):
    """config.json used to be overwritten by the resumed part's settings."""
    pretrain(small_config(tmp_path, epochs=1))
    pretrain(small_config(tmp_path, epochs=2, resume="auto"))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["pretrain"]["epochs"] == 2 and config["resumed_at"] == {"epoch": 1, "step": 6}
    assert [part["pretrain"]["epochs"] for part in config["earlier_parts"]] == [1]
    assert config["earlier_parts"][0]["git_commit"] and "earlier_parts" not in config["earlier_parts"][0]


def test_a_run_folder_made_before_safetensors_keeps_working(tmp_path, capsys):
    """A run finished with model.pth (before final weights were safetensors) is finished, not redone;
    trained further, it writes model.safetensors and drops its older model.pth."""
    cfg = small_config(tmp_path, epochs=1)
    pretrain(cfg)
    out = tmp_path / "run"
    ckpt = load_checkpoint(out / "model.safetensors")
    atomic_save(ckpt, out / "model.pth")  # what that version wrote
    (out / "model.safetensors").unlink()
    capsys.readouterr()
    pretrain(replace(cfg, resume="auto"))
    assert "nothing to do" in capsys.readouterr().out and not (out / "model.safetensors").exists()
    assert load_model(out / "model.pth").config == ckpt["config"]["model"]
    pretrain(replace(cfg, resume="auto", epochs=2))
    assert (out / "model.safetensors").exists() and not (out / "model.pth").exists()


class FakeGpus:
    """torch.cuda's generator functions for a machine with ``count`` GPUs, recording what is set."""

    def __init__(self, monkeypatch, count: int):
        self.count, self.set = count, []

        def check(device):
            index = torch.device(device).index or 0
            if index >= count:
                raise RuntimeError(f"invalid device ordinal {index}")
            return index

        def all_states():
            raise AssertionError("every visible GPU's generator was read: only this process's own is saved")

        def set_all(states):
            for i, state in enumerate(states):
                self.set.append((check(torch.device("cuda", i)), state))

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.tensor([check(device)]))
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", all_states)
        monkeypatch.setattr(
            torch.cuda, "set_rng_state", lambda state, device="cuda": self.set.append((check(device), state))
        )
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_all)


def test_each_process_saves_and_restores_only_its_own_gpu_generator(monkeypatch):
    """A checkpoint held every visible GPU's generator and restored them all: resumed on a machine with
    fewer GPUs, that was a traceback. Now a process keeps the generator of its own device only."""
    from mae_course.train.run import rng_state, set_rng_state

    gpus = FakeGpus(monkeypatch, count=8)
    state = rng_state(torch.device("cuda", 3))
    assert state["cuda"].tolist() == [3] and torch.equal(state["torch"], torch.get_rng_state())
    assert "cuda" not in rng_state(torch.device("cpu"))

    one = FakeGpus(monkeypatch, count=1)  # the same checkpoint, resumed where there is one GPU
    set_rng_state(state, torch.device("cuda", 0))
    assert [(i, s.tolist()) for i, s in one.set] == [(0, [3])]
    old = {"torch": torch.get_rng_state(), "cuda": [torch.tensor([k]) for k in range(8)]}  # the earlier format
    one.set.clear()
    set_rng_state(old, torch.device("cuda", 0))
    assert [(i, s.tolist()) for i, s in one.set] == [(0, [0])]
    one.set.clear()
    set_rng_state({"torch": torch.get_rng_state(), "cuda": old["cuda"][:1]}, torch.device("cuda", 2))
    assert one.set == [] and gpus.set == []  # no saved state for that GPU: it keeps its seeded generator
