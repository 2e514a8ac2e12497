"""Every user-facing failure is one line: disks that refuse to write, bad values, hostile images,
crafted checkpoints. Each case here was a traceback (or a silent wrong value) before."""

import builtins
import errno
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mae_course.checkpoint import load_checkpoint
from mae_course.cli import main
from mae_course.errors import CheckpointError, DataError
from mae_course.train.pretrain import PretrainConfig, pretrain
from tests.conftest import TINY_OVERRIDES, bomb_png, sixteen_bit_png, write_images

SMALL = ["--subset", "64", "--batch-size", "32", "--epochs", "1", "--device", "cpu"]
TINY = json.dumps(TINY_OVERRIDES)
COMMANDS = {  # every command that writes, with a folder (or file) to write to
    "pretrain": ["pretrain", "--output-dir", "{out}", *SMALL, "--model-overrides", TINY],
    "linprobe": ["linprobe", "--output-dir", "{out}", *SMALL],
    "finetune": ["finetune", "--output-dir", "{out}", *SMALL],
    "partial-finetune": ["partial-finetune", "--blocks", "1", "--output-dir", "{out}", *SMALL],
    "evaluate": ["evaluate", "--output-dir", "{out}", "--subset", "64", "--only", "linprobe"],
    "sweep": ["sweep", "--output-dir", "{out}", "--ratios", "0.75", "--stages", "pretrain"],
    "bench": ["bench", "--output", "{out}/t2.json", "--model", "mae_vit_mini_patch4_32", "--steps", "1"],
    "prepare": ["prepare", "{src}", "{out}", "--workers", "0"],
}


def command_line(command: str, out: Path, src: Path) -> list[str]:
    return [a.replace("{out}", str(out)).replace("{src}", str(src)) for a in COMMANDS[command]]


def one_line_error(capsys, command: str) -> str:
    """The one error line (progress bars may precede it on stderr), and no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.split("\n") if "\r" not in line and line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"mae_course {command}: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def read_only(monkeypatch, tmp_path):
    """Make everything under tmp_path/out refuse to be created or written, as a read-only disk does."""
    root = str(tmp_path / "out")
    real_open, real_mkdir = builtins.open, os.mkdir

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def guarded_open(file, mode="r", *args, **kwargs):
        if str(file).startswith(root) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_mkdir(path, *args, **kwargs):
        if str(path).startswith(root):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(os, "mkdir", guarded_mkdir)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_read_only_disk_is_one_line(command, tmp_path, capsys, image_folder, read_only):
    src = image_folder()
    assert main(command_line(command, tmp_path / "out", src)) == 2
    assert "Read-only file system" in one_line_error(capsys, command)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_file_where_a_folder_should_be_is_one_line(command, tmp_path, capsys, image_folder):
    src = image_folder()
    (tmp_path / "out").write_text("a file, not a folder")
    assert main(command_line(command, tmp_path / "out", src)) == 2
    assert re.search(r"not a folder|File exists|Not a directory|is a file", one_line_error(capsys, command))


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    args = ["pretrain", "--output-dir", str(tmp_path), "--subset", "64", "--batch-size", "32", "--epochs", "3",
            "--model-overrides", TINY, "--vis-images", "0", "--device", "cpu"]  # fmt: skip
    real_save, saves = torch.save, []

    def disk_fills_up(obj, f, *a, **kw):
        saves.append(1)
        if len(saves) == 2:  # the second checkpoint: the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", disk_fills_up)
    assert main(args) == 2
    assert f"{tmp_path / 'checkpoint-last.pth'}: No space left on device" in one_line_error(capsys, "pretrain")
    assert load_checkpoint(tmp_path / "checkpoint-last.pth")["epoch"] == 1  # the old one, intact
    assert not list(tmp_path.glob(".*.tmp-*"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["pretrain", "--model-overrides", '{"patch_size": 0}'], "patch_size must be a positive integer, got 0"),
        (["pretrain", "--model-overrides", '{"decoder_depth": -1}'], "decoder_depth must be a positive integer, got -1"),
        (["pretrain", "--model-overrides", '{"mlp_ratio": "x"}'], "mlp_ratio must be a positive number, got 'x'"),
        (["pretrain", "--model-overrides", '{"img_size": 64}'], "set img_size with --image-size"),
        (["finetune", "--mixup", "nan"], "mixup must be a finite number, got nan"),
        (["pretrain", "--blr", "inf"], "blr must be a finite number, got inf"),
        (["bench", "--mask-ratio", "1.5"], "mask ratio must be between 0 and 1"),
        (["bench", "--model-overrides", '{"depthh": 2}'], "unknown setting 'depthh'"),
        (["bench", "--suite", "model", "--models", "mae_vit_mini_patch4_32", "--model-overrides", '{"num_heads": 5}'],
         "embed_dim=128 is not divisible by num_heads=5"),
        (["bench", "--output", "{tmp}"], "is a folder; give the path of a JSON file"),
        (["bench", "--output", "{tmp}/a_file/results.json"], "a_file is a file, not a folder"),
        (["evaluate", "--only", "nosuch"], "--only names no planned run: nosuch; the runs are linprobe, finetune"),
        (["sweep", "--ablation", "decoder_depth", "--values", "x"], "decoder_depth takes int values, got 'x'"),
        (["linprobe", "--num-workers", "-1"], "num workers must be >= 0, got -1"),
    ],
)  # fmt: skip
def test_bad_values_are_one_line(args, message, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--output-dir" not in argv and argv[0] not in ("bench",):
        argv += ["--output-dir", str(tmp_path / "out")]
    assert main(argv) == 2
    assert message in one_line_error(capsys, argv[0])


# ---------------------------------------------------------------------------------------- hostile images


def test_a_bad_image_in_a_loader_worker_is_one_line(tmp_path, capsys, image_folder):
    """The worker's 15-line traceback used to be the message."""
    folder = image_folder(per_class=8, size=(40, 40))
    (folder / "train" / "cat" / "cat_3.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    args = ["pretrain", "--data", str(folder), "--image-size", "16", "--batch-size", "4", "--epochs", "1",
            "--num-workers", "2", "--model-overrides", TINY, "--output-dir", str(tmp_path / "run"), "--device", "cpu"]  # fmt: skip
    assert main(args) == 2
    err = one_line_error(capsys, "pretrain")
    assert "cannot read image" in err and "cat_3.jpg" in err and "DataLoader worker" not in err


@pytest.mark.parametrize("pipeline", ["cpu", "gpu"])
def test_a_decompression_bomb_is_an_unreadable_image(tmp_path, pipeline, image_folder):
    folder = image_folder(per_class=8, size=(40, 40))
    bomb_png(folder / "train" / "dog" / "dog_bomb.png")
    cfg = dict(data=str(folder), image_size=16, batch_size=4, epochs=1, model_overrides=dict(TINY_OVERRIDES),
               vis_images=0, device="cpu", data_pipeline=pipeline)  # fmt: skip
    with pytest.raises(DataError, match="dog_bomb.png.*(decompression bomb|20000 x 20000)"):
        pretrain(PretrainConfig(output_dir=str(tmp_path / "a"), **cfg))
    pretrain(PretrainConfig(output_dir=str(tmp_path / "b"), skip_bad_images=True, **cfg))
    epoch = [
        json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines() if "train_loss" in line
    ]
    assert epoch[0]["skipped_images"] == 1


def test_skipping_covers_the_figure_batch_and_counts_each_file_once(tmp_path, image_folder):
    """The held-out batch of the figures ignored --skip-bad-images, and a bad file was counted
    again every epoch."""
    folder = image_folder(per_class=8, size=(40, 40))
    for split in ("train", "val"):
        (folder / split / "cat" / "cat_0.jpg").write_bytes(b"garbage")  # the first image of each split
    pretrain(PretrainConfig(output_dir=str(tmp_path / "run"), data=str(folder), image_size=16, batch_size=4, epochs=2,
                            model_overrides=dict(TINY_OVERRIDES), vis_images=2, skip_bad_images=True, device="cpu"))  # fmt: skip
    epochs = [
        json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if "train_loss" in line
    ]
    assert [e["skipped_images"] for e in epochs] == [1, 1]
    assert (tmp_path / "run" / "reconstructions.png").exists()


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    from mae_course.data.image_files import open_rgb

    image = np.asarray(open_rgb(str(sixteen_bit_png(tmp_path / "deep.png", value=32768))))
    assert image.shape == (40, 48, 3) and image.mean() == 128  # was 255: convert("RGB") clips I;16
    assert np.asarray(open_rgb(str(sixteen_bit_png(tmp_path / "dark.png", value=1000)))).mean() == 3


def test_the_number_of_workers_is_capped_at_the_cores(capsys):
    from mae_course.data.datasets import cpu_cores, loader_workers

    assert loader_workers("x", 100_000) == cpu_cores()
    assert (
        f"--num-workers 100000 is more than the {cpu_cores()} CPU cores here; using {cpu_cores()}"
        in capsys.readouterr().out
    )
    assert loader_workers("x", 0) == 0 and loader_workers("builtin") == 0


def test_workers_are_this_process_s_share_of_the_cores_under_torchrun(monkeypatch, capsys):
    """torchrun's 8 processes on a 64-core node used to take 8 workers each by default and up to 64 each
    when asked: 8 x 64 worker processes. Each now gets 64 / 8 = 8 cores: 7 workers by default, at most 8."""
    from mae_course.data import datasets

    monkeypatch.setattr(datasets, "cpu_cores", lambda: 64)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert datasets.local_processes() == 8
    assert datasets.loader_workers("/data/imagenet") == 7
    assert datasets.loader_workers("/data/imagenet", 10) == 8
    assert (
        "more than this process's share of the CPU cores (64 cores / 8 processes); using 8" in capsys.readouterr().out
    )
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert datasets.loader_workers("/data/imagenet") == 8  # alone on the node: at most 8
    assert datasets.loader_workers("/data/imagenet", 10, processes=2) == 10
    monkeypatch.setattr(datasets, "cpu_cores", lambda: 4)
    assert datasets.loader_workers("/data/imagenet", processes=8) == 1  # always at least one for image files


# ---------------------------------------------------------------------------------------- crafted checkpoints


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    pretrain(PretrainConfig(output_dir=str(out), subset=64, batch_size=32, epochs=1,
                            model_overrides=dict(TINY_OVERRIDES), vis_images=0, device="cpu"))  # fmt: skip
    return out


def crafted(ckpt: dict, change: str) -> dict:
    if change == "model":
        ckpt["model"] = "not weights"
    elif change == "epoch":
        ckpt["epoch"] = "one"
    elif change == "rng":
        ckpt["rng"] = {"torch": torch.zeros(3)}
    elif change == "optimizer":
        ckpt["optimizer"]["param_groups"] = ckpt["optimizer"]["param_groups"][:1]
    elif change == "config":
        ckpt["config"] = {"pretrain": {}, "model": {"depth": "deep", "name": "mae_vit_mini_patch4_32"}}
    return ckpt


@pytest.mark.parametrize("change", ["model", "epoch", "rng", "optimizer", "config"])
def test_a_crafted_checkpoint_is_one_line_when_resumed(change, finished_run, tmp_path, capsys):
    ckpt = crafted(load_checkpoint(finished_run / "checkpoint-last.pth"), change)
    (tmp_path / "run").mkdir()
    torch.save(ckpt, tmp_path / "run" / "checkpoint-last.pth")
    args = ["pretrain", "--output-dir", str(tmp_path / "run"), "--resume", *SMALL[:4], "--epochs", "2",
            "--model-overrides", TINY, "--device", "cpu"]  # fmt: skip
    assert main(args) == 2
    assert "checkpoint" in one_line_error(capsys, "pretrain")


def test_load_model_speaks_of_the_checkpoint(tmp_path):
    from mae_course import load_model

    torch.save(
        {"model": {}, "config": {"model": {"depth": "deep", "name": "mae_vit_mini_patch4_32"}}}, tmp_path / "a.pth"
    )
    torch.save({"model": {}, "config": {"model": ["not", "a", "dict"]}}, tmp_path / "b.pth")
    for name in ("a.pth", "b.pth"):
        with pytest.raises(CheckpointError, match=f"{name} holds a model config that"):
            load_model(tmp_path / name)


def test_the_readme_states_the_code_s_cpu_defaults():
    """It said 8 epochs and blr 4e-3 while the code ran 10 and 5e-3."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    stated = re.search(
        r"The CPU defaults are scaled down: .*?(\d+) epochs, batch (\d+) and blr ([\d.e-]+)", readme, re.S
    )
    cfg = PretrainConfig()
    assert stated and (int(stated[1]), int(stated[2]), float(stated[3])) == (cfg.epochs, cfg.batch_size, cfg.blr)


def test_write_images_is_the_shared_writer(tmp_path):
    """(The fixture the other tests rely on: one writer of image folders.)"""
    root = write_images(tmp_path, {"a/x.jpg": (20, 10), "b/y.png": (8, 8)})
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.*")) == ["a/x.jpg", "b/y.png"]
