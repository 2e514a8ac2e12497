import re
import subprocess
import sys

import pytest

from mae_course.cli import main

FAST = [
    "--subset",
    "64",
    "--batch-size",
    "32",
    "--epochs",
    "1",
    "--vis-images",
    "1",
    "--model-overrides",
    '{"embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_embed_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2}',
]


def run_main(capsys, *args):
    code = main(["pretrain", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image-size", "30"], "image size 30 is not divisible by the patch size 4"),
        (["--data", "/no/such/folder"], "dataset not found"),
        (["--mask-ratio", "1.5"], "mask ratio must be between 0 and 1"),
        (["--resume", "/no/such/checkpoint.pth"], "nothing to resume: no checkpoint at /no/such/checkpoint.pth"),
        (["--device", "cuda:7"], "sees no CUDA GPU"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    code, out, err = run_main(capsys, "--output-dir", str(tmp_path / "o"), *FAST, *args)
    assert code == 2
    assert err.count("\n") == 1 and message in err and err.startswith("mae_course pretrain: error:")


def test_output_dir_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    code, _, err = run_main(capsys, "--output-dir", str(target), *FAST)
    assert code == 2 and "is not a folder" in err


def test_argparse_rejects_malformed_values(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--model-overrides", "{depth: 1}"])
    assert exit_info.value.code == 2 and "not valid JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pretrain", "--epochs", "many"])


def test_a_run_from_the_command_line(tmp_path, capsys):
    code, out, err = run_main(capsys, "--output-dir", str(tmp_path / "o"), *FAST)
    assert code == 0 and "done: 2 steps" in out and (tmp_path / "o" / "reconstructions.png").exists()


def test_module_entry_point_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mae_course", "pretrain", "--image-size", "30", "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "mae_course pretrain: error: image size 30 is not divisible by the patch size 4 of mae_vit_mini_patch4_32; use a multiple of 4"
    ]


@pytest.mark.parametrize(
    "command", ["pretrain", "linprobe", "finetune", "partial-finetune", "evaluate", "sweep", "bench", "prepare"]
)
def test_help_states_each_default_once(capsys, command):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert not re.search(r"\(default[: ][^)]*\) \(default: ", text)  # a default in words, then argparse's own
    assert "(default:" in text


def test_each_bench_option_reaches_the_suites_that_take_it_and_the_rest_keep_their_defaults():
    from dataclasses import fields

    from mae_course.experiments.bench import SUITES, BenchConfig

    taken = {name for suite in SUITES.values() for name in suite.options}
    assert {f.name for f in fields(BenchConfig)} - taken == {"suite", "models", "batch_sizes", "output"}
    for suite in SUITES.values():
        assert set(suite.options) <= {f.name for f in fields(suite.config)}
    e2e = BenchConfig(
        suite="e2e",
        models=("mae_vit_mini_patch4_32",),
        batch_sizes=(3,),
        steps=7,
        num_workers=1,
        image_size=32,
        generate=5,
    ).suite_config()
    assert (e2e.model, e2e.batch_size, e2e.steps, e2e.warmup, e2e.num_workers, e2e.generate) == (
        "mae_vit_mini_patch4_32",
        3,
        7,
        5,
        1,
        5,
    )
    table2 = BenchConfig(suite="table2", warmup=0).suite_config()
    assert (table2.model, table2.batch_size, table2.steps, table2.warmup) == ("mae_vit_large_patch16", 2, 3, 0)
    model = BenchConfig(suite="model", batch_sizes=(8, 16), tf32=False).suite_config()
    assert (model.models, model.batch_sizes, model.steps, model.tf32) == (
        ("mae_vit_base_patch16", "mae_vit_large_patch16"),
        (8, 16),
        20,
        False,
    )
