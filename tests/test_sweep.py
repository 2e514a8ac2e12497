import json

import pytest

import mae_course.sweep as sweep_module
from mae_course.cli import main
from mae_course.errors import ConfigError
from mae_course.sweep import SweepConfig, parse_value, stage_configs, sweep

TINY_MODEL = {
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "decoder_embed_dim": 16,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
}
QUICK = dict(
    device="cpu",
    pretrain={"epochs": 1, "subset": 128, "batch_size": 32, "vis_images": 0, "model_overrides": TINY_MODEL},
    linprobe={"epochs": 1, "subset": 128, "val_subset": 100, "batch_size": 64, "model": "mae_vit_mini_patch4_32"},
    finetune={"epochs": 1, "subset": 128, "val_subset": 100, "batch_size": 64, "mixup": 0.0, "cutmix": 0.0},
)


def test_each_value_changes_only_the_swept_setting(tmp_path):
    cfg = SweepConfig(output_dir=str(tmp_path), ablation="decoder_depth", values=(1, 4), **QUICK)
    one, four = (stage_configs(cfg, v) for v in (1, 4))
    assert one["pretrain"].model_overrides == {**TINY_MODEL, "decoder_depth": 1}
    assert four["pretrain"].model_overrides["decoder_depth"] == 4
    assert one["pretrain"].epochs == four["pretrain"].epochs == 1
    assert one["linprobe"].checkpoint.endswith("decoder_depth=1/pretrain/model.pth")
    ratios = SweepConfig(output_dir=str(tmp_path), values=(0.5, 0.9), **QUICK)
    assert [stage_configs(ratios, v)["pretrain"].mask_ratio for v in (0.5, 0.9)] == [0.5, 0.9]
    flag = stage_configs(SweepConfig(ablation="mask_token_in_encoder", values=(False, True), **QUICK), True)
    assert flag["pretrain"].mask_token_in_encoder is True


def test_values_are_read_and_checked():
    assert parse_value("mask_token_in_encoder", "true") is True and parse_value("decoder_depth", "4") == 4
    with pytest.raises(ConfigError, match="takes true or false"):
        parse_value("norm_pix_loss", "maybe")
    with pytest.raises(ConfigError, match="unknown ablation"):
        SweepConfig(ablation="dropout").validate()
    with pytest.raises(ConfigError, match="mask ratio must be between 0 and 1"):
        SweepConfig(values=(0.5, 1.2), **QUICK).validate()
    with pytest.raises(ConfigError, match="repeat"):
        SweepConfig(values=(0.5, 0.5)).validate()


def test_a_sweep_resumes_without_redoing_finished_values(tmp_path, monkeypatch, capsys):
    cfg = SweepConfig(output_dir=str(tmp_path), values=(0.5, 0.75), **QUICK)
    real_finetune = sweep_module.finetune
    calls = []

    def interrupted(run_config, *args, **kwargs):
        calls.append(run_config.output_dir)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stopped during the second value's fine-tuning
        return real_finetune(run_config, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "finetune", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep(cfg)
    partial = json.loads((tmp_path / "results.json").read_text())
    assert list(partial["runs"]) == ["0.5"] and set(partial["runs"]["0.5"]) == {"pretrain", "linprobe", "finetune"}

    monkeypatch.setattr(sweep_module, "finetune", real_finetune)
    capsys.readouterr()
    results = sweep(cfg)
    out = capsys.readouterr().out
    for stage in ("pretrain", "linprobe", "finetune"):
        assert f"mask_ratio=0.5 {stage}: done before, kept" in out
    assert "mask_ratio=0.75 pretrain: done before, kept" in out and "mask_ratio=0.75 finetune: running" in out
    assert sorted(results["runs"]) == ["0.5", "0.75"]
    entry = results["runs"]["0.75"]
    assert (
        0 <= entry["linprobe"]["top1"] <= 100
        and entry["finetune"]["wall_time_s"] > 0
        and entry["pretrain"]["epochs"] == 1
    )
    assert results["hardware"]["device"] and results["git_commit"] and results["data"]["name"] == "builtin"
    assert json.loads((tmp_path / "started.json").read_text())["git_commit"] == results["git_commit"]
    assert (tmp_path / "results.png").exists()


def test_sweep_from_the_command_line(tmp_path, capsys):
    args = [
        "sweep",
        "--output-dir",
        str(tmp_path),
        "--stages",
        "pretrain",
        "--device",
        "cpu",
        "--pretrain",
        json.dumps(QUICK["pretrain"]),
    ]
    assert main([*args, "--ablation", "decoder_depth", "--values", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert "decoder_depth=1: pretrain loss" in out and "decoder_depth=2: pretrain loss" in out
    assert main([*args, "--ablation", "decoder_depth"]) == 2
    assert "give the values of decoder_depth" in capsys.readouterr().err
    assert main([*args, "--ratios", "0.5", "--ablation", "decoder_depth", "--values", "1"]) == 2
