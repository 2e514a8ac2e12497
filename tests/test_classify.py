import argparse
import json
import re

import pytest
import torch

from mae_course import build_model
from mae_course.checkpoint import load_checkpoint
from mae_course.cli import main
from mae_course.errors import CheckpointError, ConfigError
from mae_course.evaluation.finetune import FinetuneConfig, finetune
from mae_course.evaluation.linprobe import LinprobeConfig, linprobe
from mae_course.evaluation.metrics import accuracy_counts
from mae_course.evaluation.protocols import probe_head
from mae_course.train.recipe import set_lr
from tests.conftest import key_words, recorder

FAST = dict(subset=256, val_subset=500, batch_size=64, epochs=2, warmup_epochs=0.5, log_every=1, device="cpu")


def test_probe_head_is_batchnorm_without_affine_then_linear():
    head = probe_head(16, 4)
    bn, linear = head
    assert isinstance(bn, torch.nn.BatchNorm1d) and not bn.affine and bn.eps == 1e-6
    assert isinstance(linear, torch.nn.Linear) and linear.weight.shape == (4, 16)
    assert linear.weight.std() < 0.03 and torch.equal(linear.bias, torch.zeros(4))


def test_accuracy_counts_by_hand():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.2], [0.2, 0.3, 0.5]])
    targets = torch.tensor([1, 2, 0])
    top1, top2 = accuracy_counts(logits, targets, topk=(1, 2))
    assert top1.item() == 1 and top2.item() == 2  # sample 1: class 2 is its 2nd; sample 2: class 0 is its 3rd
    top1, top5 = accuracy_counts(logits, targets)  # fewer classes than 5: top-5 counts all
    assert top5.item() == 3


def test_set_lr_applies_each_groups_scale():
    p, q = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr_scale": 0.25}, {"params": [q]}], lr=1.0)
    set_lr(opt, 0.4)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.4]


def test_cached_features_give_the_same_probe(tmp_path, mini_mae_checkpoint):
    """Caching frozen features is only a speed-up: the same losses and accuracy as computing them each step."""
    runs = {}
    for cache in (True, False):
        losses = []
        cfg = LinprobeConfig(
            output_dir=str(tmp_path / str(cache)), checkpoint=str(mini_mae_checkpoint), cache_features=cache, **FAST
        )
        metrics = linprobe(cfg, on_step=lambda step, loss, into=losses: into.append(loss))
        runs[cache] = (losses, metrics)
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-4)
    assert runs[True][1]["top1"] == pytest.approx(runs[False][1]["top1"], abs=0.1)


def test_finetune_writes_metrics_log_and_weights(tmp_path, mini_mae_checkpoint):
    summary = finetune(FinetuneConfig(output_dir=str(tmp_path / "ft"), checkpoint=str(mini_mae_checkpoint), **FAST))
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["top1"] == summary["top1"] and 0 <= metrics["top1"] <= metrics["top5"] <= 100
    assert metrics["data"] == {"name": "builtin", "train_images": 256, "val_images": 500, "classes": 10}
    assert metrics["config"]["checkpoint"] == str(mini_mae_checkpoint) and metrics["wall_time_s"] > 0
    assert metrics["hardware"]["processes"] == 1 and "CPU" in metrics["hardware"]["device"]
    epochs = [
        json.loads(line) for line in (tmp_path / "ft" / "log.jsonl").read_text().splitlines() if '"val_top1"' in line
    ]
    assert [e["epoch"] for e in epochs] == [1, 2]
    weights = load_checkpoint(tmp_path / "ft" / "model.safetensors")
    assert weights["model"]["head.weight"].shape == (10, 128)


def test_finetune_starts_from_the_checkpoint_and_scratch_does_not(tmp_path, mini_mae_checkpoint):
    encoder = load_checkpoint(mini_mae_checkpoint)["model"]
    seen = {}

    def spy(name):
        def on_step(step, loss):
            seen.setdefault(name, loss)

        return on_step

    finetune(
        FinetuneConfig(output_dir=str(tmp_path / "a"), checkpoint=str(mini_mae_checkpoint), **{**FAST, "epochs": 1}),
        spy("mae"),
    )
    finetune(FinetuneConfig(output_dir=str(tmp_path / "b"), **{**FAST, "epochs": 1}), spy("scratch"))
    assert seen["mae"] != seen["scratch"]
    trained = load_checkpoint(tmp_path / "a" / "model.safetensors")["model"]
    # after a few small steps the fine-tuned patch embedding is still close to the checkpoint's
    assert torch.allclose(trained["patch_embed.proj.weight"], encoder["patch_embed.proj.weight"], atol=0.05)


@pytest.mark.parametrize("tuning", [dict(tune_blocks=2), dict(tune_mlp_only=True)])
def test_partial_finetuning_leaves_the_rest_frozen(tmp_path, mini_mae_checkpoint, tuning):
    finetune(
        FinetuneConfig(
            output_dir=str(tmp_path / "p"), checkpoint=str(mini_mae_checkpoint), **{**FAST, "epochs": 1}, **tuning
        )
    )
    before = load_checkpoint(mini_mae_checkpoint)["model"]
    after = load_checkpoint(tmp_path / "p" / "model.safetensors")["model"]
    changed = {k for k in after if k in before and not torch.equal(after[k], before[k])}
    if "tune_blocks" in tuning:
        assert {k.split(".")[1] for k in changed if k.startswith("blocks.")} == {"4", "5"}
    else:
        in_blocks = {k for k in changed if k.startswith("blocks.")}
        assert in_blocks and all(k.startswith(("blocks.5.mlp.", "blocks.5.norm2.")) for k in in_blocks)
    assert not any(k.startswith(("patch_embed", "cls_token", "pos_embed", "blocks.0.")) for k in changed)


def test_partial_finetuning_settings():
    with pytest.raises(ConfigError, match="linear probing: use `python -m mae_course linprobe`"):
        FinetuneConfig(tune_blocks=0).validate()
    with pytest.raises(ConfigError, match="not both"):
        FinetuneConfig(tune_blocks=1, tune_mlp_only=True).validate()


def test_a_released_checkpoint_needs_its_architecture_named(tmp_path):
    model = build_model("mae_vit_mini_patch4_32")
    path = tmp_path / "released.pth"
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(model="mae_vit_mini")}, path)
    with pytest.raises(CheckpointError, match="no model config .*--model"):
        finetune(FinetuneConfig(output_dir=str(tmp_path / "x"), checkpoint=str(path), **FAST))
    summary = linprobe(
        LinprobeConfig(output_dir=str(tmp_path / "y"), checkpoint=str(path), model="mae_vit_mini_patch4_32", **FAST)
    )
    assert summary["trained_parameters"] == 128 * 10 + 10  # only the linear layer (the BatchNorm has no affine)


def test_finetune_resumes_mid_epoch_to_the_same_losses(tmp_path, mini_mae_checkpoint):
    base = dict(checkpoint=str(mini_mae_checkpoint), **FAST, mixup=0.0, cutmix=0.0)
    reference = []
    finetune(FinetuneConfig(output_dir=str(tmp_path / "a"), **base), on_step=lambda s, loss: reference.append(loss))

    cfg = FinetuneConfig(output_dir=str(tmp_path / "b"), **base)
    first, stop = recorder(stop_at=6)  # Ctrl-C in the middle of epoch 2
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, on_step=stop)
    rest = []
    cfg.resume = "auto"
    finetune(cfg, on_step=lambda s, loss: rest.append(loss))
    assert first + rest == reference  # exactly


@pytest.mark.parametrize(
    "args, message",
    [
        (["linprobe", "--checkpoint", "/no/such.pth"], "checkpoint not found: /no/such.pth"),
        (["finetune", "--data", "/no/such/folder"], "dataset not found"),
        (["finetune", "--layer-decay", "1.5"], "layer decay must be in"),
        (["linprobe", "--augment", "crop", "--cache-features"], "cached features cannot be augmented"),
        (["partial-finetune", "--blocks", "0"], "linear probing"),
        (["partial-finetune", "--blocks", "9"], "only 6 blocks"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    code = main([*args, "--output-dir", str(tmp_path / "o"), "--subset", "64", "--batch-size", "32", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err


def test_partial_finetune_needs_a_choice(capsys):
    with pytest.raises(SystemExit):
        main(["partial-finetune"])
    assert "one of the arguments --blocks --mlp-only is required" in capsys.readouterr().err


def test_cached_features_live_on_the_cpu_and_are_pinned_only_from_it(tmp_path, mini_mae_checkpoint):
    """Features cached on a GPU made the loader pin GPU tensors, which PyTorch refuses."""
    from torch.utils.data import TensorDataset

    from mae_course.data.batches import pins_memory
    from mae_course.evaluation.linprobe import frozen_features

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    on_cpu = TensorDataset(torch.zeros(4, 8), torch.zeros(4))
    on_device = TensorDataset(torch.zeros(4, 8, device="meta"), torch.zeros(4, device="meta"))  # any non-CPU device
    assert pins_memory(on_cpu, cuda) and not pins_memory(on_cpu, cpu) and not pins_memory(on_device, cuda)
    model = build_model("mae_vit_mini_patch4_32")
    from mae_course.model.vit import vit_from_mae

    vit = vit_from_mae(model.config, 10)
    from mae_course.data import BuiltinShapes
    from mae_course.data.transforms import eval_transform

    images = torch.utils.data.Subset(BuiltinShapes("test", 32, eval_transform(32, 1.0)), range(8))
    features = frozen_features(vit, images, "val", LinprobeConfig(batch_size=4), workers=0, show=False)
    assert all(t.device.type == "cpu" for t in features.tensors) and features.tensors[0].shape == (8, 128)


def test_the_warmup_fraction_is_a_recorded_setting():
    """It was a class attribute among the fields, so the saved settings lost it."""
    from dataclasses import asdict

    assert asdict(LinprobeConfig())["warmup_fraction"] == pytest.approx(1 / 9)
    assert asdict(FinetuneConfig())["warmup_fraction"] == 0.1
    assert LinprobeConfig(epochs=90).warmup == pytest.approx(10)


def test_a_finished_run_keeps_its_metrics_and_a_lost_one_is_measured_again(tmp_path, mini_mae_checkpoint, capsys):
    """Resuming a finished fine-tune rewrote metrics.json with a wall time of about 0 s."""
    cfg = FinetuneConfig(output_dir=str(tmp_path / "ft"), checkpoint=str(mini_mae_checkpoint), **{**FAST, "epochs": 1})
    first = finetune(cfg)
    path = tmp_path / "ft" / "metrics.json"
    written = path.read_bytes()
    cfg.resume = "auto"
    assert finetune(cfg) == first and path.read_bytes() == written
    assert "nothing to do" in capsys.readouterr().out
    path.unlink()
    again = finetune(cfg)
    assert again["top1"] == first["top1"] and again["wall_time_s"] == first["wall_time_s"] > 0.1
    assert again["best_top1"] == first["best_top1"]


def test_one_class_or_mismatched_classes_are_refused(tmp_path, image_folder, capsys):
    """A one-class folder gave 100% top-1; val classes that differ from train's would mean other labels."""
    one = image_folder(tmp_path / "one", classes=("cat",))
    args = ["--subset", "8", "--batch-size", "4", "--epochs", "1", "--image-size", "16", "--device", "cpu"]
    assert main(["linprobe", "--data", str(one), "--output-dir", str(tmp_path / "a"), *args]) == 2
    assert re.search(key_words("1 class (cat)", "at least two"), capsys.readouterr().err)
    mixed = image_folder(tmp_path / "mixed")
    (mixed / "val" / "dog").rename(mixed / "val" / "cow")
    assert main(["finetune", "--data", str(mixed), "--output-dir", str(tmp_path / "b"), *args]) == 2
    assert "only in train: ['dog']; only in val: ['cow']" in capsys.readouterr().err


def test_validation_every_few_epochs_and_always_at_the_end(tmp_path, mini_mae_checkpoint):
    cfg = LinprobeConfig(
        output_dir=str(tmp_path / "p"), checkpoint=str(mini_mae_checkpoint), val_every=2, **{**FAST, "epochs": 5}
    )
    summary = linprobe(cfg)
    epochs = [
        json.loads(line) for line in (tmp_path / "p" / "log.jsonl").read_text().splitlines() if '"train_loss"' in line
    ]
    assert [e["epoch"] for e in epochs if "val_top1" in e] == [2, 4, 5] and len(epochs) == 5
    assert summary["top1"] == epochs[-1]["val_top1"]


@pytest.mark.parametrize("impl", ["for-loop", "foreach", "fused"])
def test_finetuning_builds_its_adamw_like_pretraining_and_honours_the_kernel_choice(impl):
    """--optimizer-impl picks fine-tuning's AdamW kernel too (it was fused on CUDA only, whatever was asked),
    with fine-tuning's betas and one group per block for the layer-wise lr decay."""
    from mae_course.evaluation import finetune as ft
    from mae_course.model.registry import MODEL_CONFIGS
    from mae_course.model.vit import vit_from_mae

    cfg = FinetuneConfig(optimizer_impl=impl)
    model = vit_from_mae({**MODEL_CONFIGS["mae_vit_tiny_patch4_32"], "img_size": 32}, 10)
    optimizer = ft.optimizer(cfg, model, lr=1e-3)
    assert optimizer.defaults["fused"] == (impl == "fused") and optimizer.defaults["foreach"] == (impl == "foreach")
    assert optimizer.defaults["betas"] == (0.9, 0.999)
    scales = sorted({g["lr_scale"] for g in optimizer.param_groups})
    assert len(scales) == model.config["depth"] + 2 and scales[-1] == 1.0  # embeddings, each block, the head
    assert FinetuneConfig().optimizer_impl is None


def test_finetuning_keeps_its_own_kernels_unless_told():
    """Without --optimizer-impl, fine-tuning keeps the kernels it always had: fused on a GPU (faked here:
    the choice reads only the device), the for-loop on the CPU, whose losses the fused CPU kernel would change."""
    from mae_course.evaluation import finetune as ft
    from mae_course.model.registry import MODEL_CONFIGS
    from mae_course.model.vit import vit_from_mae

    assert ft.default_impl(torch.device("cuda", 3)) == "fused" and ft.default_impl(torch.device("cpu")) == "for-loop"
    model = vit_from_mae({**MODEL_CONFIGS["mae_vit_mini_patch4_32"], "img_size": 32}, 10)
    optimizer = ft.optimizer(FinetuneConfig(), model, lr=1e-3)
    assert optimizer.defaults["fused"] is False and optimizer.defaults["foreach"] is False
