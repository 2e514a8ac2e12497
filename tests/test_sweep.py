import json
from dataclasses import replace

import pytest

import mae_course.experiments.sweep as sweep_module
from mae_course.checkpoint import atomic_save, load_checkpoint
from mae_course.cli import main
from mae_course.errors import ConfigError
from mae_course.experiments.sweep import SweepConfig, parse_value, stage_configs, sweep, sweep_figure
from tests.conftest import key_words

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
    assert one["linprobe"].checkpoint.endswith("decoder_depth=1/pretrain/model.safetensors")
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
    assert entry["pretrain"]["median_epoch_time_s"] == pytest.approx(entry["pretrain"]["train_time_s"])  # one epoch
    assert entry["pretrain"]["resumed"] is False
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


def test_a_sweep_refuses_to_continue_under_other_settings(tmp_path, capsys):
    cfg = SweepConfig(output_dir=str(tmp_path), values=(0.5,), stages=("pretrain",), **QUICK)
    sweep(cfg)
    assert json.loads((tmp_path / "sweep.json").read_text())["pretrain"]["epochs"] == 1
    longer = replace(cfg, pretrain={**QUICK["pretrain"], "epochs": 2})
    with pytest.raises(
        ConfigError, match=r'holds a sweep with other settings \(pretrain: .*"epochs": 1.* there, .*"epochs": 2.* now\)'
    ):
        sweep(longer)
    with pytest.raises(ConfigError, match="seed: 0 there, 1 now"):
        sweep(replace(cfg, seed=1))
    # more values and more stages continue the same sweep
    capsys.readouterr()
    results = sweep(replace(cfg, values=(0.5, 0.75)))
    assert "mask_ratio=0.5 pretrain: done before, kept" in capsys.readouterr().out
    assert sorted(results["runs"]) == ["0.5", "0.75"]


def test_a_sweep_written_before_sweep_json_is_checked_against_its_results(tmp_path):
    cfg = SweepConfig(output_dir=str(tmp_path), values=(0.5,), stages=("pretrain",), **QUICK)
    sweep(cfg)
    (tmp_path / "sweep.json").unlink()
    with pytest.raises(ConfigError, match="image_size: 32 there, 64 now"):
        sweep(replace(cfg, image_size=64))


def _results(ablation, values):
    runs = {v: {"linprobe": {"top1": 30.0 + i}, "finetune": {"top1": 40.0 + i}} for i, v in enumerate(values)}
    return {"ablation": ablation, "values": values, "runs": runs}


def _axes_of(fig, stage):
    """The measured panel of ``stage`` and the paper's panel below it (None when there is none)."""
    title = "fine-tuning" if stage == "finetune" else "linear probing"
    ours = next(ax for ax in fig.axes if ax.get_title().startswith(title))
    below = [ax for ax in fig.axes if ax is not ours and ax.get_position().x0 == pytest.approx(ours.get_position().x0)]
    return ours, (below[0] if below else None)


def _paper_line(fig, stage):
    """(x, y) of the paper's points on the panel below the measured panel of ``stage``."""
    theirs = _axes_of(fig, stage)[1]
    if theirs is None:
        return None
    (line,) = [line for line in theirs.lines if line.get_label().startswith("the paper (")]
    return [float(x) for x in line.get_xdata()], [float(y) for y in line.get_ydata()]


def test_the_figure_puts_the_papers_numbers_next_to_the_measured_ones():
    depth = sweep_figure(_results("decoder_depth", ["1", "2", "4"]))
    assert _paper_line(depth, "linprobe") == ([1, 2, 4], [65.5, 70.0, 71.9])  # Table 1a at the measured depths
    assert _paper_line(depth, "finetune") == ([1, 2, 4], [84.8, 84.9, 84.9])
    sampling = sweep_figure(_results("mask_sampling", ["grid", "random"]))
    assert _paper_line(sampling, "linprobe") == ([0, 1], [66.0, 73.5])
    ratios = sweep_figure(_results("mask_ratio", ["0.25", "0.75"]))
    assert _paper_line(ratios, "linprobe") == ([0.1, 0.75], [54.6, 73.5])  # Figure 5's stated points
    assert _paper_line(sweep_figure(_results("mask_ratio", ["0.75"]), paper=False), "linprobe") is None
    assert _paper_line(sweep_figure(_results("decoder_depth", ["3"])), "linprobe") is None  # not in the paper


def test_measured_and_paper_axes_share_their_scale():
    """A 0.1-point move in the paper must not look as steep as a 1-point move of ours."""
    fig = sweep_figure(_results("decoder_depth", ["1", "2", "4"]))
    ours, theirs = _axes_of(fig, "finetune")
    spans = [ax.get_ylim()[1] - ax.get_ylim()[0] for ax in (ours, theirs)]
    assert spans[0] == pytest.approx(spans[1]) and spans[0] >= 6.0
    assert theirs.get_ylim()[0] < 84.8 and theirs.get_ylim()[1] > 84.9
    assert ours.get_xlabel() == theirs.get_xlabel() == "decoder depth"


def test_the_baselines_share_the_measured_axes():
    """From-scratch and random-encoder accuracy are what a pretrained number is read against."""
    fig = sweep_figure(_results("mask_ratio", ["0.25", "0.75"]), baselines={"finetune": 19.65, "linprobe": 17.25})
    for stage, name, value in (("finetune", "from scratch", 19.65), ("linprobe", "random encoder", 17.25)):
        ours, _ = _axes_of(fig, stage)
        (line,) = [line for line in ours.lines if line.get_label().startswith(name)]
        assert list(line.get_ydata()) == [value, value]
    assert _axes_of(sweep_figure(_results("epochs", ["10", "20"])), "finetune")[1] is None  # no paper numbers


def test_a_sweep_without_fine_tuning_draws_only_its_probe():
    """Lesson 08's reduced sweep probes only: an empty fine-tuning panel read as a failed run."""
    results = _results("mask_ratio", ["0.25", "0.75"])
    for run in results["runs"].values():
        del run["finetune"]
    fig = sweep_figure(results, paper=False)
    assert [ax.get_title() for ax in fig.axes] == ["linear probing: top-1 vs masking ratio"]
    assert len(sweep_figure(_results("mask_ratio", ["0.75"]), paper=False).axes) == 2


def test_a_stage_that_lost_its_model_is_finished_on_the_next_run(tmp_path, capsys):
    """A pretraining stage killed while writing model.safetensors made every rerun of the sweep fail: the
    stage said 'already finished' and the probe found no model."""
    cfg = SweepConfig(output_dir=str(tmp_path), values=(0.75,), stages=("pretrain", "linprobe"), **QUICK)
    sweep(cfg)
    stage = tmp_path / "mask_ratio=0.75"
    (stage / "pretrain" / "model.safetensors").unlink()
    (stage / "linprobe" / "metrics.json").unlink()
    results = sweep(cfg)
    out = capsys.readouterr().out
    assert "mask_ratio=0.75 pretrain: resuming" in out and "wrote the missing model.safetensors" in out
    assert (stage / "pretrain" / "model.safetensors").exists() and "linprobe" in results["runs"]["0.75"]


def test_the_length_of_pretraining_is_an_ablation(tmp_path):
    """Figure 7 in miniature: the same protocol after longer and longer pretraining."""
    quick = {**QUICK, "pretrain": {k: v for k, v in QUICK["pretrain"].items() if k != "epochs"}}
    cfg = SweepConfig(output_dir=str(tmp_path), ablation="epochs", values=(1, 2), **quick)
    one, two = (stage_configs(cfg, v)["pretrain"] for v in (1, 2))
    assert (one.epochs, two.epochs) == (1, 2) and one.output_dir.endswith("epochs=1/pretrain")
    with pytest.raises(ConfigError, match=key_words("--pretrain", "'epochs'", "--ablation epochs")):
        stage_configs(SweepConfig(output_dir=str(tmp_path), ablation="epochs", values=(1,), **QUICK), 1)


def test_a_sweep_made_before_safetensors_uses_its_model_pth(tmp_path, capsys):
    """A sweep folder whose pretraining wrote model.pth (before safetensors) is continued as it is: the
    stage is done, and the probe added later reads that model.pth."""
    cfg = SweepConfig(output_dir=str(tmp_path), values=(0.75,), stages=("pretrain",), **QUICK)
    sweep(cfg)
    pretrained = tmp_path / "mask_ratio=0.75" / "pretrain"
    atomic_save(load_checkpoint(pretrained / "model.safetensors"), pretrained / "model.pth")
    (pretrained / "model.safetensors").unlink()
    capsys.readouterr()
    results = sweep(replace(cfg, stages=("pretrain", "linprobe")))
    assert "mask_ratio=0.75 pretrain: done before, kept" in capsys.readouterr().out
    assert "pretrain" in results["runs"]["0.75"] and "linprobe" in results["runs"]["0.75"]
    probe = json.loads((tmp_path / "mask_ratio=0.75" / "linprobe" / "config.json").read_text())
    assert probe["linprobe"]["checkpoint"] == str(pretrained / "model.pth")
    assert not (pretrained / "model.safetensors").exists()


def test_the_encoder_s_size_is_an_ablation_with_a_scratch_baseline_of_the_same_size(tmp_path):
    """Figure 8 in miniature: for each width, the MAE fine-tuned and the same architecture from scratch,
    with the same fine-tuning settings; only the scratch stage has no checkpoint."""
    cfg = SweepConfig(
        output_dir=str(tmp_path),
        ablation="embed_dim",
        values=(16, 32),
        stages=("pretrain", "finetune", "scratch"),
        **QUICK,
    )
    narrow = stage_configs(cfg, 16)
    assert narrow["pretrain"].model_overrides == {**TINY_MODEL, "embed_dim": 16}
    assert narrow["scratch"].checkpoint is None and narrow["finetune"].checkpoint.endswith("pretrain/model.safetensors")
    assert narrow["scratch"].model_overrides == narrow["pretrain"].model_overrides
    assert narrow["scratch"].model == narrow["pretrain"].model
    assert replace(narrow["scratch"], output_dir="", model_overrides={}, model=None) == replace(
        narrow["finetune"], output_dir="", checkpoint=None
    )  # the same budget and recipe: only the start differs
    results = sweep(cfg)
    for value in ("16", "32"):
        run = results["runs"][value]
        assert run["finetune"]["trained_parameters"] == run["scratch"]["trained_parameters"]
    assert (
        results["runs"]["16"]["scratch"]["trained_parameters"] < results["runs"]["32"]["scratch"]["trained_parameters"]
    )
    saved = json.loads((tmp_path / "embed_dim=16" / "scratch" / "config.json").read_text())
    assert saved["classifier"]["embed_dim"] == 16 and saved["finetune"]["checkpoint"] is None
    with pytest.raises(ConfigError, match="stages are pretrain"):
        SweepConfig(stages=("scratch",)).validate()


def test_fine_tuning_takes_model_overrides_only_for_a_random_start(tmp_path):
    from mae_course.evaluation.classify import encoder_source
    from mae_course.evaluation.finetune import FinetuneConfig

    cfg = FinetuneConfig(output_dir=str(tmp_path), model_overrides={"embed_dim": 64, "num_heads": 2})
    cfg.validate()
    config, weights = encoder_source(cfg)
    assert (config["embed_dim"], config["num_heads"], weights) == (64, 2, None)
    checkpoint = tmp_path / "some.pth"
    checkpoint.write_bytes(b"")
    with pytest.raises(ConfigError, match=key_words("model overrides", "random start", "checkpoint")):
        replace(cfg, checkpoint=str(checkpoint)).validate()
    with pytest.raises(ConfigError, match=key_words("embed_dim=66", "divisible", "num_heads=4")):
        FinetuneConfig(model_overrides={"embed_dim": 66}).validate()
    with pytest.raises(ConfigError, match="unknown setting 'width'"):
        FinetuneConfig(model_overrides={"width": 64}).validate()


def test_quiet_runs_print_one_line_per_run_and_no_progress_bars(tmp_path, capsys):
    """Lessons wrap long runs in quiet_runs(): each pretraining, probe and fine-tuning prints its
    result in one line when it ends, and no opening lines, stage notes or progress bars."""
    from mae_course.lesson import quiet_runs, runs_quietly

    cfg = SweepConfig(output_dir=str(tmp_path / "quiet"), values=(0.75,), **QUICK)
    assert not runs_quietly()
    with quiet_runs():
        assert runs_quietly()
        results = sweep(cfg)
    assert not runs_quietly()
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["pretrain", "linprobe", "finetune"], lines
    probe = results["runs"]["0.75"]["linprobe"]["top1"]
    assert f"linprobe: top1 {probe:.1f}% after 1 epochs" in lines[1] and "mask_ratio=0.75/linprobe" in lines[1]
    assert "pretrain: mae_vit_mini_patch4_32, 1 epochs, loss " in lines[0]
    assert "step" not in captured.err and "%|" not in captured.err  # no tqdm bar was drawn

    sweep(replace(cfg, output_dir=str(tmp_path / "loud"), stages=("pretrain",)))  # the usual log
    out = capsys.readouterr().out
    assert "mask_ratio=0.75 pretrain: running" in out and "pretraining mae_vit_mini_patch4_32 on builtin" in out
    assert not any(line.startswith("pretrain: mae_vit") for line in out.splitlines())
