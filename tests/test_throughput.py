"""The model-throughput benchmark: rows, MFU, the peer comparison, errors kept per row."""

import json

import pytest
import torch

from mae_course.cli import main
from mae_course.experiments.flops import mae_flops
from mae_course.experiments.throughput import (
    ThroughputConfig,
    peak_for,
    peak_tflops,
    throughput,
    throughput_text,
    time_shares,
)
from mae_course.model.registry import build_model

NARROW = {"embed_dim": 32, "depth": 2, "num_heads": 2, "decoder_embed_dim": 16, "decoder_num_heads": 2}


# A training step of the NARROW mini model, per image, counted by hand (mae_course.experiments.flops's rule,
# checked against FlopCounterMode below): 64 patches of 4x4x3, 16 kept: the encoder sees 17 tokens 32 wide
# and the decoder 65 tokens 16 wide. Patch embedding 2*64*48*32 = 196,608; encoder 2 blocks x (24*17*32^2 + 4*17^2*32)
# = 909,568; decoder embedding 2*17*32*16 = 17,408, 2 blocks x (24*65*16^2 + 4*65^2*16) = 1,339,520, prediction
# 2*64*16*48 = 98,304. Forward 2,561,408; forward and backward 3 x that:
TRAIN_STEP_FLOPS = 7_684_224


def config(**kw):
    base = dict(
        models=("mae_vit_mini_patch4_32",),
        batch_sizes=(2, 4),
        steps=1,
        warmup=0,
        device="cpu",
        model_overrides=NARROW,
        implementations=("fast-eager", "peer", "plain"),
    )
    return ThroughputConfig(**{**base, **kw})


def test_every_model_batch_and_implementation_is_measured():
    pytest.importorskip("transformers")
    results = throughput(config(peak_tflops=1.0), progress=lambda line: None)
    assert results["suite"] == "model"
    rows = results["rows"]
    assert [(r["implementation"], r["batch_size"]) for r in rows] == [
        ("fast-eager", 2),
        ("peer", 2),
        ("plain", 2),
        ("fast-eager", 4),
        ("peer", 4),
        ("plain", 4),
    ]
    for row in rows:
        assert "error" not in row, row
        assert row["images_per_s"] == pytest.approx(row["batch_size"] / (row["step_ms"] / 1000))
        assert row["gflops_per_image"] == pytest.approx(TRAIN_STEP_FLOPS / 1e9)
        assert 0 < row["mfu"] < 1  # of a 1 TFLOP/s peak; the exact share on a faked clock below
    for ours, peer in zip(rows[0::3], rows[1::3], strict=True):  # like with like: both eager, the same dtype
        assert ours["vs_peer"] == pytest.approx(ours["images_per_s"] / peer["images_per_s"])
        assert (ours["compiled"], ours["amp"], ours["attention"]) == (peer["compiled"], peer["amp"], peer["attention"])
    assert all("vs_peer" not in r for r in rows if r["implementation"] in ("peer", "plain"))
    text = throughput_text(results)
    assert "x peer" in text and "TF32 on" in text and results["hardware"]["torch"] and results["git_commit"]
    assert results["peer_version"].startswith("transformers ")


def test_compiled_rows_compare_with_a_compiled_peer_each_from_a_fresh_compiler(monkeypatch):
    """ "fast" (compiled) used to be set against the eager peer, and one compiled model served a whole batch
    sweep (later rows timed graphs recompiled with dynamic shapes). Now ours and the peer compile their blocks
    the same way, with dynamic=False, each row after torch._dynamo.reset(). torch.compile is faked here."""
    pytest.importorskip("transformers")
    compiled, resets = [], []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(kw) or fn)
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(len(compiled)))
    results = throughput(config(implementations=("fast", "peer-compiled")), progress=lambda line: None)
    rows = results["rows"]
    assert [r["implementation"] for r in rows] == ["fast", "peer-compiled"] * 2 and all(r["compiled"] for r in rows)
    blocks = NARROW["depth"] + build_model("mae_vit_mini_patch4_32").config["decoder_depth"]
    assert resets == [0, blocks, 2 * blocks, 3 * blocks]  # a reset before each row, then its own compilation
    assert compiled == [{"dynamic": False}] * 4 * blocks
    assert rows[0]["vs_peer"] == pytest.approx(rows[0]["images_per_s"] / rows[1]["images_per_s"])


def test_tf32_is_set_explicitly_for_the_timing_and_recorded(monkeypatch):
    from mae_course.experiments import throughput as module

    seen = []
    real = module.time_steps
    monkeypatch.setattr(module, "time_steps", lambda *a: seen.append(torch.backends.cuda.matmul.allow_tf32) or real(*a))
    before = torch.backends.cuda.matmul.allow_tf32
    for tf32 in (True, False):
        results = throughput(config(implementations=("plain",), batch_sizes=(2,), tf32=tf32), progress=lambda x: None)
        assert results["tf32"] is tf32 and results["rows"][0]["tf32"] is tf32
    assert seen == [True, False] and torch.backends.cuda.matmul.allow_tf32 == before


def test_the_peak_is_looked_up_by_the_exact_gpu_name():
    """By substring, an "NVIDIA L40" got the L4's 121 TFLOP/s and any "H100 ..." the SXM's."""
    assert peak_for("NVIDIA L40") == 181.05 and peak_for("NVIDIA L4") == 121.0
    assert peak_for("NVIDIA H100 80GB HBM3") == 989.4 and peak_for("NVIDIA H100 PCIe") == 756.0
    assert peak_for("NVIDIA H200") == 989.4 and peak_for("Tesla T4") == 65.0
    assert peak_for("NVIDIA B200") is None and peak_for("NVIDIA H100") is None  # unknown: no guess


def test_the_flop_count_agrees_with_torch_s_flop_counter():
    """mae_flops against torch.utils.flop_counter.FlopCounterMode, which counts every matrix product,
    convolution and attention the model really runs: the forward pass within 0.5% (LayerNorms and
    the rest, which both leave out), and a training step (forward + backward) within 2% of 3 x forward
    (the backward pass skips the input gradient of the patch embedding)."""
    from torch.utils.flop_counter import FlopCounterMode

    for name, overrides in (
        ("mae_vit_base_patch16", {}),
        ("mae_vit_mini_patch4_32", {}),
        ("mae_vit_mini_patch4_32", NARROW),  # the model of TRAIN_STEP_FLOPS
        ("mae_vit_tiny_patch4_32", {"depth": 3}),
    ):
        model = build_model(name, **overrides)
        size = model.config["img_size"]
        imgs = torch.randn(2, 3, size, size)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(imgs, mask_ratio=0.75)
        ours = mae_flops(model.config, 0.75)
        assert counter.get_total_flops() / 2 == pytest.approx(ours.forward, rel=5e-3), name
        with FlopCounterMode(display=False) as counter:
            loss, _, _ = model(imgs, mask_ratio=0.75)
            loss.backward()
        assert counter.get_total_flops() / 2 == pytest.approx(ours.train_step, rel=2e-2), name
    assert mae_flops(build_model("mae_vit_base_patch16").config).train_step / 1e9 == pytest.approx(58.7, abs=0.05)
    assert mae_flops(build_model("mae_vit_mini_patch4_32", **NARROW).config).train_step == TRAIN_STEP_FLOPS


def test_mfu_is_the_achieved_share_of_the_peak(monkeypatch):
    """On a faked clock (every step 0.5 s) and a faked peak, worked by hand: batch 4 in 0.5 s is 8 images/s;
    8 x 7,684,224 FLOPs = 61,473,792 FLOP/s = 6.147e-5 TFLOP/s achieved; of a 1e-4 TFLOP/s peak, MFU 0.6147."""
    from mae_course.experiments import throughput as module

    monkeypatch.setattr(module, "time_steps", lambda *args, **kwargs: 0.5)
    results = throughput(config(implementations=("plain",), batch_sizes=(4,), peak_tflops=1e-4), progress=lambda x: x)
    row = results["rows"][0]
    assert (row["step_ms"], row["images_per_s"]) == (500.0, 8.0)
    assert row["achieved_tflops"] == pytest.approx(6.1473792e-5)
    assert row["mfu"] == pytest.approx(0.61473792) and results["peak_tflops"] == 1e-4
    assert "MFU  61.5%" in throughput_text(results)
    # no peak given: the device's own, here a faked GPU's (the table's A100 entry through its exact name)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    assert peak_tflops(torch.device("cuda", 0)) == 312.0
    monkeypatch.setattr(module, "peak_tflops", lambda device: 2e-4)
    results = throughput(config(implementations=("plain",), batch_sizes=(4,)), progress=lambda x: x)
    assert results["rows"][0]["mfu"] == pytest.approx(0.30736896) and results["peak_tflops"] == 2e-4


def test_a_profile_writes_a_trace_and_the_shares_of_matmul_and_attention(tmp_path):
    results = throughput(
        config(implementations=("fast-eager",), batch_sizes=(4,), profile=str(tmp_path / "prof")),
        progress=lambda line: None,
    )
    profile = results["rows"][0]["profile"]
    assert (tmp_path / "prof" / "mae_vit_mini_patch4_32_fast-eager_4.json.gz").stat().st_size > 1000
    shares = [profile[f"{k}_share"] for k in ("matmul", "attention", "other")]
    assert sum(shares) == pytest.approx(1.0) and profile["matmul_share"] > 0.05 and profile["attention_share"] > 0
    assert "% matmul" in throughput_text(results)
    assert time_shares(
        [("sm90_xmma_gemm_bf16bf16", 3.0), ("flash_fwd_kernel", 1.0), ("triton_poi_fused_add", 1.0)]
    ) == {
        "matmul": 0.6,
        "attention": 0.2,
        "other": 0.2,
    }


@pytest.mark.parametrize(
    ("failure", "recorded"),
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory"), "out of memory"),
        (RuntimeError("boom"), "RuntimeError: boom"),
    ],
)
def test_a_failing_configuration_is_recorded_not_fatal(monkeypatch, failure, recorded):
    from mae_course.experiments import throughput as module

    time_steps = module.time_steps

    def fails_at_batch_4(step, imgs, steps, warmup):
        if imgs.shape[0] == 4:
            raise failure
        return time_steps(step, imgs, steps, warmup)

    monkeypatch.setattr(module, "time_steps", fails_at_batch_4)
    rows = throughput(config(implementations=("plain",)), progress=lambda line: None)["rows"]
    assert [(row["batch_size"], row.get("error")) for row in rows] == [(2, None), (4, recorded)]
    assert rows[0]["images_per_s"] > 0 and "images_per_s" not in rows[1]


def test_no_mfu_without_a_known_peak():
    import torch

    assert peak_tflops(torch.device("cpu")) is None
    results = throughput(config(implementations=("plain",), batch_sizes=(2,)))
    assert results["rows"][0]["mfu"] is None and results["peak_tflops"] is None


def test_bench_model_suite_from_the_command_line(tmp_path, capsys):
    args = [
        "bench",
        "--suite",
        "model",
        "--models",
        "mae_vit_mini_patch4_32",
        "--model-overrides",
        json.dumps(NARROW),
        "--batch-sizes",
        "2",
        "--implementations",
        "plain",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
        "--output",
        str(tmp_path / "m.json"),
    ]
    assert main(args) == 0
    assert "img/s" in capsys.readouterr().out and json.loads((tmp_path / "m.json").read_text())["suite"] == "model"
    assert main([*args, "--steps", "0"]) == 2
    assert main(["bench", "--suite", "table2", "--models", "mae_vit_base_patch16", "mae_vit_large_patch16"]) == 2


def test_a_non_finite_loss_while_timing_is_the_course_s_error():
    import torch

    from mae_course.errors import NonFiniteLossError
    from mae_course.experiments.throughput import time_steps

    with pytest.raises(NonFiniteLossError, match="the loss became nan while timing the steps"):
        time_steps(lambda imgs: torch.tensor(float("nan")), torch.zeros(1), steps=1, warmup=0)
