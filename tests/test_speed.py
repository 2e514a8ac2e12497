"""The speed options of the training step compute what the plain step computes (mae_course.step).

Each option is compared, on the CPU, with the plain step: float32, for-loop AdamW, eager, no
checkpointing. The kernels, compilation and checkpointing agree to float32 rounding; bf16
autocast to bf16's rounding. The one claim that needs a GPU (no host sync) runs where there is one.
"""

import contextlib
import re
from unittest import mock

import pytest
import torch

from mae_course.cli import main
from mae_course.errors import ConfigError
from mae_course.model.registry import build_model
from mae_course.train import step as step_module
from mae_course.train.pretrain import PretrainConfig, pretrain
from mae_course.train.recipe import adamw_impl_flags, make_adamw
from mae_course.train.step import auto_precision, autocast_for, compile_blocks, make_train_step, resolve_amp
from tests.conftest import key_words

CPU = torch.device("cpu")


def tiny(**overrides):
    torch.manual_seed(0)
    return build_model("mae_vit_tiny_patch4_32", **overrides)


def batch(n: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, 32, 32) images and (N, 64) masking noise."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.rand(n, 64, generator=g)


def loss_and_grads(module, imgs, noise) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss, _, _ = module(imgs, 0.75, noise)
    loss.backward()
    model = getattr(module, "_orig_mod", module)
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def test_bf16_autocast_matches_float32():
    model = tiny()
    imgs, noise = batch(8)
    autocast, needs_scaler = autocast_for(CPU, "bf16")
    assert not needs_scaler and autocast_for(CPU, "fp16")[1]  # fp16 needs a loss scaler, bf16 does not
    assert autocast_for(CPU, "auto")[1] is False  # auto on the CPU: full precision
    with torch.no_grad():
        full, _, _ = model(imgs, 0.75, noise)
        with autocast():
            mixed, pred, _ = model(imgs, 0.75, noise)
    assert pred.dtype == torch.bfloat16  # the matrix products really ran in bf16...
    assert mixed.dtype == torch.float32  # ...and the loss was computed in float32
    # bf16 keeps 8 significant bits: each product is rounded by up to 2^-9 = 0.2% (relative).
    # The loss, a mean over 8 x 48 x 48 squared errors, averages most of that away: measured
    # 0.06-0.09% for this model. 1% leaves room for that and still catches a real mistake.
    assert mixed.item() == pytest.approx(full.item(), rel=1e-2)
    assert mixed.item() != full.item()

    step = make_train_step(model, make_adamw(model, lr=1e-3), amp="fp16")  # fp16 steps through a loss scaler
    assert step.scaler is not None and torch.isfinite(step(imgs))


def test_the_residual_streams_stay_float32_under_autocast():
    """As in the official models_mae.py: float32 positional tables added to 16-bit projections promote the
    sum, so under bf16 autocast every block of the encoder and of the decoder reads and returns float32,
    while its matrix products run in bf16."""
    model = tiny()
    imgs, noise = batch(2)
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = (inputs[0].dtype, output.dtype)

        return hook

    model.blocks[0].register_forward_hook(record("encoder"))
    model.decoder_blocks[0].register_forward_hook(record("decoder"))
    model.decoder_blocks[0].attn.qkv.register_forward_hook(record("decoder qkv"))
    with torch.no_grad(), autocast_for(CPU, "bf16")[0]():
        model(imgs, 0.75, noise)
    assert seen["encoder"] == seen["decoder"] == (torch.float32, torch.float32)
    assert seen["decoder qkv"][1] == torch.bfloat16  # the products still run in bf16


@pytest.mark.parametrize(
    "gpu, capability, precision",
    [
        ("Tesla T4", (7, 5), "fp16"),
        ("Tesla V100-SXM2-16GB", (7, 0), "fp16"),
        ("NVIDIA A100-SXM4-80GB", (8, 0), "bf16"),
        ("NVIDIA H100 80GB HBM3", (9, 0), "bf16"),
    ],
)
def test_auto_precision_follows_the_compute_capability(gpu, capability, precision, monkeypatch):
    """bf16 only where the tensor cores have it (8.0 and up); below, fp16 with a loss scaler, even though
    torch.cuda.is_bf16_supported() says True there (emulated bf16). The GPU is faked: only its capability is read."""
    assert auto_precision("cuda", capability) == precision
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what a T4 answers
    assert resolve_amp(torch.device("cuda"), "auto") == precision
    assert resolve_amp(torch.device("cuda"), "none") == "none"  # asked for: kept
    monkeypatch.setattr(step_module.torch, "autocast", lambda device_type, dtype: (device_type, dtype))
    autocast, needs_scaler = autocast_for(torch.device("cuda"), "auto")
    assert autocast() == ("cuda", torch.bfloat16 if precision == "bf16" else torch.float16)
    assert needs_scaler == (precision == "fp16")


def test_auto_precision_is_full_precision_off_cuda():
    assert auto_precision("cpu") == auto_precision("mps") == "none"
    assert resolve_amp(CPU, "auto") == "none" and resolve_amp(CPU, "bf16") == "bf16"
    with pytest.raises(ConfigError, match="unknown amp mode 'fp8'"):
        resolve_amp(CPU, "fp8")


@pytest.mark.parametrize("impl", ["fused", "foreach"])
def test_adamw_kernels_match_the_for_loop(impl):
    """Same updates as the for-loop AdamW, on the same gradients; and the same losses when training.

    Parameters are compared on identical gradients: when training, the key bias of attention gets
    a gradient that is 0 in exact arithmetic (softmax ignores a shift of all the scores of a query),
    so autograd returns rounding noise there, which Adam normalizes into full-size steps. Two
    kernels that round once differently then move that bias differently, without any effect on
    the loss (for the same reason).
    """
    model = tiny(depth=2, decoder_depth=1)
    params = [p for p in model.parameters() if p.requires_grad]
    copies = {name: [p.detach().clone().requires_grad_() for p in params] for name in (impl, "for-loop")}
    optimizers = {
        name: torch.optim.AdamW(ps, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05, **adamw_impl_flags(name, CPU))
        for name, ps in copies.items()
    }
    imgs, noise = batch(4)
    for _ in range(5):  # real MAE gradients, the same for both
        with torch.no_grad():
            for p, q in zip(params, copies["for-loop"], strict=True):
                p.copy_(q)
        _, grads = loss_and_grads(model, imgs, noise)
        for name, optimizer in optimizers.items():
            for q, g in zip(copies[name], grads.values(), strict=True):
                q.grad = g.clone()
            optimizer.step()
    for p, q in zip(copies[impl], copies["for-loop"], strict=True):
        assert torch.allclose(p, q, rtol=0, atol=1e-6)

    def train(impl):
        model = tiny(depth=2, decoder_depth=1)
        optimizer = make_adamw(model, lr=1e-3, impl=impl)
        assert optimizer.defaults["fused"] == (impl == "fused") and optimizer.defaults["foreach"] == (impl == "foreach")
        step = make_train_step(model, optimizer, amp="none")
        torch.manual_seed(3)  # the same masks
        return [step(imgs).item() for _ in range(5)]

    assert train(impl) == pytest.approx(train("for-loop"), rel=1e-6)


def test_auto_picks_the_fused_adamw_kernel():
    assert adamw_impl_flags("auto", CPU) == {"fused": True, "foreach": False}  # 4x faster than the for-loop here
    assert adamw_impl_flags("auto", torch.device("cuda", 0)) == {"fused": True, "foreach": False}
    assert adamw_impl_flags("for-loop", CPU) == {"fused": False, "foreach": False}
    with pytest.raises(ValueError, match="unknown optimizer implementation 'adam'"):
        adamw_impl_flags("adam", CPU)


def test_grad_checkpointing_gives_the_same_loss_and_gradients():
    model = tiny()
    imgs, noise = batch(8)
    keys = list(model.state_dict())
    plain_loss, plain_grads = loss_and_grads(model, imgs, noise)

    calls = []
    for block in [*model.blocks, *model.decoder_blocks]:
        block.register_forward_pre_hook(lambda *_: calls.append(1))
    model.set_grad_checkpointing(True)
    loss, grads = loss_and_grads(model, imgs, noise)
    assert len(calls) == 2 * (6 + 2)  # every block started twice: forward, and again in the backward pass
    assert torch.allclose(loss, plain_loss, rtol=1e-6, atol=0)
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, plain_grads[name], rtol=1e-5, atol=1e-7), name
    assert list(model.state_dict()) == keys  # a setting, not a wrapper: checkpoints keep their keys

    def saved_for_backward() -> int:
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.nbytes) or t, lambda t: t):
            model(imgs, 0.75, noise)
        return sum(saved)

    memory = saved_for_backward()
    model.set_grad_checkpointing(False)
    assert saved_for_backward() > 5 * memory  # measured: 9.5x less kept for the backward pass

    with torch.no_grad():  # no gradients, nothing to save: evaluation runs the blocks plainly, once
        model.set_grad_checkpointing(True)
        calls.clear()
        model(imgs, 0.75, noise)
        assert len(calls) == 8


def test_compiled_model_matches_eager():
    """Compiling the blocks (inductor: C++ on the CPU) gives the eager loss and gradients, keeps the
    state_dict keys, and compiles every block of both stacks, in place."""
    model = tiny()
    imgs, noise = batch(2)
    eager_loss, eager_grads = loss_and_grads(model, imgs, noise)
    step = make_train_step(model, make_adamw(model, lr=1e-3), amp="none", compile=True)
    assert step.module is model and list(model.state_dict()) == list(tiny().state_dict())
    compiled = [b for b in (*model.blocks, *model.decoder_blocks) if b._compiled_call_impl is not None]
    assert len(compiled) == len(model.blocks) + len(model.decoder_blocks) and model._compiled_call_impl is None
    loss, grads = loss_and_grads(step.module, imgs, noise)
    assert torch.allclose(loss, eager_loss, rtol=1e-5, atol=0)
    for name, grad in grads.items():
        assert torch.allclose(grad, eager_grads[name], rtol=1e-4, atol=1e-6), name


def test_blocks_are_compiled_one_shape_at_a_time_in_ours_and_in_the_peer(monkeypatch):
    """Ours and transformers' ViTMAE are compiled alike, block by block, with dynamic=False (no graphs made
    for any batch size after a recompile). Faked torch.compile: only its calls are looked at."""
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append(kw) or fn)
    model = tiny()
    assert compile_blocks(model) == len(model.blocks) + len(model.decoder_blocks)
    assert calls and all(kw == {"dynamic": False} for kw in calls)
    pytest.importorskip("transformers")
    from mae_course.experiments.peer import build_peer

    peer = build_peer(model.config)
    assert compile_blocks(peer) == model.config["depth"] + model.config["decoder_depth"]


def test_the_fast_step_reads_nothing_back():
    """No .item(), float(), bool() or .tolist() of a tensor inside the step: nothing waits for the device.

    (The for-loop and foreach AdamW read their step counters, which live on the CPU even for
    GPU parameters; the fused kernel, the default, keeps them on the device.)
    """
    model = tiny(depth=1, decoder_depth=1)
    step = make_train_step(model, make_adamw(model, lr=1e-3, impl="fused"), amp="bf16", grad_checkpointing=True)
    imgs, _ = batch(4)
    step(imgs)  # the first step creates the optimizer state

    def read_back(*args, **kwargs):
        raise AssertionError("the step read a value back from a tensor")

    with contextlib.ExitStack() as patches:
        for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
            patches.enter_context(mock.patch.object(torch.Tensor, name, read_back))
        losses = [step(imgs) for _ in range(3)]
    assert all(isinstance(loss, torch.Tensor) and loss.shape == () for loss in losses)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_fast_step_never_waits_for_the_gpu():
    model = tiny().cuda()
    step = make_train_step(model, make_adamw(model, lr=1e-3), amp="auto", grad_checkpointing=True)
    imgs = torch.randn(8, 3, 32, 32, device="cuda")
    step(imgs)  # the first step creates the optimizer state (and the loss scaler's, with fp16)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host sync raises
    try:
        losses = [step(imgs) for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(loss) for loss in losses)


SMALL = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


def run_losses(folder, **speed) -> list[float]:
    cfg = PretrainConfig(
        output_dir=str(folder),
        subset=128,
        batch_size=32,
        epochs=1,
        warmup_epochs=0.5,
        model_overrides=dict(SMALL),
        blr=1e-2,
        log_every=1,
        vis_images=0,
        device="cpu",
        **speed,
    )
    losses = []
    pretrain(cfg, on_step=lambda step, loss: losses.append(loss))
    return losses


def test_a_run_with_every_cpu_speed_option_matches_the_plain_run(tmp_path, monkeypatch):
    """bf16, fused AdamW, torch.compile and checkpointing together: the losses of the plain run. ~30-40 s (compiling)."""
    # Compiled code draws random numbers its own way (the masks would differ: 1-2% off here);
    # this makes it draw them as eager code does.
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    compiled = []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(fn) or real_compile(fn, **kw))

    plain = run_losses(tmp_path / "plain", amp="none", optimizer_impl="for-loop")
    assert not compiled
    fast = run_losses(tmp_path / "fast", amp="bf16", optimizer_impl="fused", compile=True, grad_checkpointing=True)
    assert len(compiled) == 2  # SMALL's one encoder block and one decoder block
    assert len(plain) == len(fast) == 4
    # bf16 rounding (see test_bf16_autocast_matches_float32), now in the gradients too: measured 0.03%.
    assert fast == pytest.approx(plain, rel=1e-2)
    assert fast != plain


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(optimizer_impl="adam"), "unknown optimizer impl 'adam'; choose one of auto, fused, foreach, for-loop"),
        (dict(bucket_cap_mb=0), "bucket cap must be a positive number of megabytes, got 0"),
        (dict(bucket_cap_mb=float("inf")), "bucket_cap_mb must be a finite number, got inf"),
        (dict(amp="fp8"), "unknown amp 'fp8'; choose one of auto, bf16, fp16, none"),
    ],
)
def test_bad_speed_settings(overrides, message):
    with pytest.raises(ConfigError, match=message):
        PretrainConfig(**overrides).validate()


def test_every_speed_option_is_a_flag(tmp_path, capsys, monkeypatch):
    import mae_course.train.pretrain as job

    assert main(["pretrain", "--output-dir", str(tmp_path), "--bucket-cap-mb", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mae_course pretrain: error: ") and err.count("\n") == 1, err
    assert re.search(key_words("bucket cap", "positive", "-1.0"), err), err

    def fake_pretrain(cfg: PretrainConfig) -> dict:
        seen.append(cfg)
        return {}

    seen = []
    monkeypatch.setattr(job, "pretrain", fake_pretrain)
    args = [
        "--amp",
        "bf16",
        "--optimizer-impl",
        "foreach",
        "--compile",
        "--grad-checkpointing",
        "--bucket-cap-mb",
        "50",
    ]
    assert main(["pretrain", *args]) == 0
    cfg = seen[0]
    assert (cfg.amp, cfg.optimizer_impl, cfg.compile, cfg.grad_checkpointing, cfg.bucket_cap_mb) == (
        "bf16",
        "foreach",
        True,
        True,
        50.0,
    )
    defaults = PretrainConfig()
    assert (defaults.amp, defaults.optimizer_impl, defaults.compile, defaults.grad_checkpointing) == (
        "auto",
        "auto",
        False,
        False,
    )
    assert defaults.bucket_cap_mb == 25.0  # torch's default
