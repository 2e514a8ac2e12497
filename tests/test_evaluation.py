import json
from dataclasses import replace

import pytest
import torch

from mae_course.cli import main
from mae_course.evaluation.all_protocols import EvaluationConfig, evaluate_encoder, planned_runs

QUICK = dict(subset=128, val_subset=200, device="cpu")
ONE_EPOCH = {"epochs": 1, "batch_size": 64}


def test_the_planned_runs():
    runs = planned_runs(EvaluationConfig(checkpoint="x.pth", partial_blocks=(1, 3)))
    assert list(runs) == [
        "linprobe",
        "finetune",
        "linprobe_random",
        "finetune_scratch",
        "partial_1",
        "partial_3",
        "partial_mlp",
    ]
    assert runs["linprobe_random"][1].checkpoint is None and runs["finetune_scratch"][1].checkpoint is None
    assert runs["partial_3"][1].tune_blocks == 3 and runs["partial_mlp"][1].tune_mlp_only
    assert runs["linprobe"][1].checkpoint == "x.pth" and runs["linprobe"][1].global_pool == "avg"


def test_evaluate_writes_results_and_does_not_redo_finished_runs(tmp_path, mini_mae_checkpoint, capsys):
    cfg = EvaluationConfig(
        checkpoint=str(mini_mae_checkpoint),
        output_dir=str(tmp_path),
        partial_blocks=(1,),
        linprobe=ONE_EPOCH,
        finetune=ONE_EPOCH,
        **QUICK,
    )
    summary = evaluate_encoder(replace(cfg, only=("linprobe", "partial_1")))
    assert sorted(summary["runs"]) == ["linprobe", "partial_1"]
    capsys.readouterr()
    summary = evaluate_encoder(cfg)  # the rest; the two finished runs are kept
    out = capsys.readouterr().out
    assert "linprobe: done before, kept" in out and "partial_1: done before, kept" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert sorted(results["runs"]) == sorted(
        ["linprobe", "finetune", "linprobe_random", "finetune_scratch", "partial_1", "partial_mlp"]
    )
    for run in results["runs"].values():
        assert 0 <= run["top1"] <= run["top5"] <= 100 and run["wall_time_s"] > 0 and run["epochs"] == 1
    assert results["data"] == {"name": "builtin", "image_size": 32, "subset": 128, "val_subset": 200}
    assert results["git_commit"] and results["hardware"]["torch"] == torch.__version__
    assert (tmp_path / "results.png").stat().st_size > 1000
    assert results["runs"]["linprobe"]["trained_parameters"] < results["runs"]["partial_1"]["trained_parameters"]


def test_evaluate_from_the_command_line(tmp_path, mini_mae_checkpoint, capsys):
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(mini_mae_checkpoint),
            "--output-dir",
            str(tmp_path),
            "--subset",
            "128",
            "--val-subset",
            "100",
            "--only",
            "linprobe",
            "--linprobe",
            json.dumps(ONE_EPOCH),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "linprobe " in out and "results:" in out
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.pth"), "--output-dir", str(tmp_path / "x")]) == 2


def test_evaluate_refuses_to_mix_two_evaluations_in_one_folder(tmp_path, mini_mae_checkpoint, capsys):
    """A second evaluate with another checkpoint (or data) used to keep the first one's metrics and
    write the new checkpoint's name next to them in results.json."""
    import shutil

    from mae_course.errors import ConfigError

    cfg = EvaluationConfig(
        checkpoint=str(mini_mae_checkpoint),
        output_dir=str(tmp_path / "eval"),
        only=("linprobe",),
        linprobe=ONE_EPOCH,
        **QUICK,
    )
    evaluate_encoder(cfg)
    other = tmp_path / "other.pth"
    shutil.copyfile(mini_mae_checkpoint, other)
    evaluate_encoder(replace(cfg, checkpoint=str(other)))  # the same content elsewhere: the same evaluation
    retrained = tmp_path / "retrained.pth"
    state = torch.load(mini_mae_checkpoint, weights_only=True)
    state["model"]["cls_token"] += 1
    torch.save(state, retrained)
    with pytest.raises(ConfigError, match="holds an evaluation with other settings .*checkpoint_file"):
        evaluate_encoder(replace(cfg, checkpoint=str(retrained)))
    with pytest.raises(ConfigError, match="subset: 128 there, 64 now"):
        evaluate_encoder(replace(cfg, subset=64))
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["checkpoint"] == str(other)


def test_the_results_figure_names_runs_in_words():
    from mae_course.data import shipped_results
    from mae_course.evaluation.all_protocols import results_figure

    longer = json.loads(shipped_results("partial_long").read_text())
    fig = results_figure(json.loads(shipped_results("evaluation").read_text()), longer)
    assert longer["runs"]["partial_1"]["epochs"] == 15  # 3x the 5 epochs of the shipped evaluation
    marks = {line.get_label(): list(line.get_ydata()) for line in fig.axes[1].lines}
    assert marks["last block tuned, 15 epochs"] == [longer["runs"]["partial_1"]["top1"]]
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[:5] == [
        "linear probe, random encoder",
        "linear probe",
        "last block's MLP tuned",
        "from scratch",
        "fine-tuning",
    ]
    assert "last block tuned" in labels and "last 2 blocks tuned" in labels
    assert not any("_" in label for label in labels)
