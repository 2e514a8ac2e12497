"""The model-throughput benchmark: rows, MFU, the peer comparison, errors kept per row."""

import json

import pytest

from mae_course.cli import main
from mae_course.experiments.flops import mae_flops
from mae_course.experiments.throughput import ThroughputConfig, peak_tflops, throughput, throughput_text
from mae_course.model.registry import build_model

NARROW = {"embed_dim": 32, "depth": 2, "num_heads": 2, "decoder_embed_dim": 16, "decoder_num_heads": 2}


def config(**kw):
    base = dict(models=("mae_vit_mini_patch4_32",), batch_sizes=(2, 4), steps=1, warmup=0, device="cpu",
                model_overrides=NARROW, implementations=("plain", "peer"))  # fmt: skip
    return ThroughputConfig(**{**base, **kw})


def test_every_model_batch_and_implementation_is_measured():
    pytest.importorskip("transformers")
    results = throughput(config(peak_tflops=1.0), progress=lambda line: None)
    assert results["suite"] == "model"
    rows = results["rows"]
    assert [(r["implementation"], r["batch_size"]) for r in rows] == [
        ("plain", 2),
        ("peer", 2),
        ("plain", 4),
        ("peer", 4),
    ]
    flops = mae_flops(build_model("mae_vit_mini_patch4_32", **NARROW).config).train_step
    for row in rows:
        assert "error" not in row, row
        assert row["images_per_s"] == pytest.approx(row["batch_size"] / (row["step_ms"] / 1000))
        assert row["gflops_per_image"] == pytest.approx(flops / 1e9)
        assert row["mfu"] == pytest.approx(row["images_per_s"] * flops / 1e12)  # peak given: 1 TFLOP/s
        assert row["vs_peer"] > 0
    assert rows[1]["vs_peer"] == 1.0
    assert "peer" in throughput_text(results) and results["hardware"]["torch"] and results["git_commit"]
    assert results["peer_version"].startswith("transformers ")


def test_a_failing_configuration_is_recorded_not_fatal():
    results = throughput(config(implementations=("plain",), mask_ratio=0.999))
    assert all("error" in row and "keeps no token" in row["error"] for row in results["rows"])


def test_no_mfu_without_a_known_peak():
    import torch

    assert peak_tflops(torch.device("cpu")) is None
    results = throughput(config(implementations=("plain",), batch_sizes=(2,)))
    assert "mfu" not in results["rows"][0] and results["peak_tflops"] is None


def test_bench_model_suite_from_the_command_line(tmp_path, capsys):
    args = ["bench", "--suite", "model", "--models", "mae_vit_mini_patch4_32", "--model-overrides", json.dumps(NARROW),
            "--batch-sizes", "2", "--implementations", "plain", "--steps", "1", "--warmup", "0", "--device", "cpu",
            "--output", str(tmp_path / "m.json")]  # fmt: skip
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
