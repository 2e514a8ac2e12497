"""Settings defined once: the command line generated from the dataclass fields, and JSON settings
checked against them."""

import argparse
import json
from dataclasses import dataclass

import pytest

from mae_course.cli import COMMANDS, build_parser, main
from mae_course.config import check_types, from_mapping, option
from mae_course.errors import ConfigError
from mae_course.evaluation.finetune import FinetuneConfig
from mae_course.evaluation.linprobe import LinprobeConfig
from mae_course.train.pretrain import PretrainConfig
from tests.conftest import key_words

# Every command's options before the redesign generated them from the settings (bench also takes
# --model and --batch-size as aliases of --models and --batch-sizes): the same, flag for flag, plus
# those added since: prepare --overwrite (issue 12), --val-every of the classifier jobs, and their
# --model-overrides for a random start (Figure 8's scratch baseline, issue 23).
OPTIONS = {
    "pretrain": "--accum-iter --amp --augment --batch-size --betas --blr --bucket-cap-mb --check-grad-sync --compile --crop-min-scale --data --data-pipeline --data-root --device --download --epochs --grad-checkpointing --image-size --log-every --lr --mask-ratio --mask-sampling --mask-token-in-encoder --min-lr --model --model-overrides --no-norm-pix-loss --norm-pix-loss --num-workers --optimizer-impl --output-dir --overwrite --resume --save-every --seed --skip-bad-images --subset --vis-images --warmup-epochs --weight-decay",
    "linprobe": "--accum-iter --amp --augment --batch-size --blr --cache-features --checkpoint --data --data-root --device --download --epochs --global-pool --image-size --log-every --lr --min-lr --model --model-overrides --no-cache-features --num-workers --optimizer --output-dir --overwrite --resume --save-every --seed --skip-bad-images --subset --val-every --val-subset --warmup-epochs --weight-decay",
    "finetune": "--accum-iter --amp --batch-size --blr --checkpoint --crop-min-scale --cutmix --data --data-root --device --download --drop-path --epochs --global-pool --image-size --layer-decay --log-every --lr --min-lr --mixup --model --model-overrides --num-workers --optimizer-impl --output-dir --overwrite --randaug --reprob --resume --save-every --seed --skip-bad-images --smoothing --subset --val-every --val-subset --warmup-epochs --weight-decay",
    "partial-finetune": "--accum-iter --amp --batch-size --blocks --blr --checkpoint --crop-min-scale --cutmix --data --data-root --device --download --drop-path --epochs --global-pool --image-size --layer-decay --log-every --lr --min-lr --mixup --mlp-only --model --model-overrides --num-workers --optimizer-impl --output-dir --overwrite --randaug --reprob --resume --save-every --seed --skip-bad-images --smoothing --subset --val-every --val-subset --warmup-epochs --weight-decay",
    "segment": "--accum-iter --amp --batch-size --blr --checkpoint --data --data-root --device --download --drop-path --epochs --image-size --layer-decay --log-every --lr --min-lr --model --model-overrides --num-workers --optimizer-impl --output-dir --overwrite --resume --save-every --seed --skip-bad-images --subset --val-every --val-subset --warmup-epochs --weight-decay",  # new: lesson 10
    "evaluate": "--baselines --checkpoint --data --data-root --device --finetune --image-size --linprobe --model --no-baselines --no-partial-mlp --only --output-dir --partial-blocks --partial-mlp --seed --subset --val-subset",
    "sweep": "--ablation --data --data-root --device --finetune --image-size --linprobe --output-dir --pretrain --ratios --seed --stages --values",
    "bench": "--amp --batch-size --batch-sizes --compile --data --decoder-depths --device --generate --generate-dir --image-size --implementations --mask-ratio --model --model-overrides --models --no-compile --no-tf32 --num-workers --output --peak-tflops --pipelines --profile --steps --suite --tf32 --warmup",
    "prepare": "--overwrite --quality --short-side --skip-bad-images --workers",  # --overwrite: new (issue 12)
}


def subparser(name: str) -> argparse.ArgumentParser:
    return next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


@pytest.mark.parametrize("command", list(OPTIONS))
def test_every_command_keeps_its_options(command):
    flags = {s for action in subparser(command)._actions for s in action.option_strings if s not in ("-h", "--help")}
    assert sorted(flags) == OPTIONS[command].split()


def test_each_flag_carries_its_fields_default_and_help():
    p = subparser("linprobe")
    actions = {a.dest: a for a in p._actions}
    assert actions["epochs"].default == 90 and actions["blr"].default == 6.4  # the probe's own defaults
    assert actions["epochs"].help == "passes over the training images"  # the help of the shared field
    assert actions["optimizer"].choices == ["lars", "sgd"]
    assert isinstance(actions["cache_features"], argparse.BooleanOptionalAction)
    pre = {a.dest: a for a in subparser("pretrain")._actions}
    assert pre["resume"].nargs == "?" and pre["resume"].const == "auto" and pre["betas"].nargs == 2
    assert subparser("prepare")._actions[1].dest == "src"  # positional arguments stay positional


def test_flags_become_the_settings(monkeypatch):
    import mae_course.train.pretrain as job

    seen = []
    monkeypatch.setattr(job, "pretrain", lambda cfg: seen.append(cfg) or {})
    assert main(["pretrain", "--betas", "0.8", "0.9", "--model-overrides", '{"decoder_depth": 1}', "--resume"]) == 0
    cfg = seen[0]
    assert cfg.betas == (0.8, 0.9) and cfg.model_overrides == {"decoder_depth": 1} and cfg.resume == "auto"


def test_every_field_is_a_flag_or_says_why_not():
    """A new setting appears on the command line by itself; the few that do not are listed here."""
    # tune_*: partial-finetune's --blocks/--mlp-only; values: sweep's --values (parsed per ablation);
    # global_pool: segment always uses every token
    not_flags = {"warmup_fraction", "tune_blocks", "tune_mlp_only", "values", "global_pool"}
    for _, settings, *_ in COMMANDS.values():
        module, name = settings.split(":")
        cls = getattr(__import__(f"mae_course.{module}", fromlist=[name]), name)
        for field in cls.__dataclass_fields__.values():
            assert field.name in not_flags or field.metadata.get("cli", True), field.name


@pytest.mark.parametrize(
    "values, message",
    [
        ({"bogus": 1}, "--linprobe: unknown setting 'bogus'; allowed: .*accum_iter.*weight_decay"),
        ({"epochs": "x"}, '--linprobe: epochs must be an integer, got "x"'),
        ({"epochs": 2.5}, "--linprobe: epochs must be an integer, got 2.5"),
        ({"blr": True}, "--linprobe: blr must be a finite number, got true"),
        ({"blr": float("nan")}, "--linprobe: blr must be a finite number, got NaN"),
        ({"seed": 3}, "--linprobe sets 'seed', which evaluate's --seed sets for every run; give it there, once"),
    ],
)
def test_json_settings_are_checked_against_the_fields(values, message):
    with pytest.raises(ConfigError, match=message):
        from_mapping(LinprobeConfig, values, "--linprobe", fixed={"seed": "evaluate's --seed"})
    assert from_mapping(LinprobeConfig, {"epochs": 3, "blr": 1}, "--linprobe").blr == 1.0  # an int is a number


def test_types_and_non_finite_numbers_are_refused_everywhere():
    with pytest.raises(ConfigError, match=key_words("finetune", "mixup", "finite", "nan")):
        FinetuneConfig(mixup=float("nan")).validate()
    with pytest.raises(ConfigError, match="pretrain: epochs must be an integer, got '3'"):
        PretrainConfig(epochs="3").validate()

    @dataclass
    class Example:
        stages: tuple[str, ...] = option(("a",), "stages", choices=("a", "b"))

    check_types(Example(("a", "b")))
    with pytest.raises(ConfigError, match="unknown stages 'c'; choose one of a, b"):
        check_types(Example(("a", "c")))


def test_json_options_on_the_command_line_are_checked(tmp_path, capsys):
    for bad in ('{"bogus": 1}', '{"seed": 3}', '{"epochs": "x"}'):
        assert main(["evaluate", "--output-dir", str(tmp_path), "--linprobe", bad]) == 2
        assert main(["sweep", "--output-dir", str(tmp_path), "--pretrain", bad]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 6 and all(
        line.startswith(("mae_course evaluate: error:", "mae_course sweep: error:")) for line in err
    )
    assert "unknown setting 'bogus'" in err[1] and "sweep's --seed" in err[3] and json.dumps("x") in err[5]
