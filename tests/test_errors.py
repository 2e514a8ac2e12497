"""Every user-facing failure is one line: disks that refuse to write, bad values, hostile images,
crafted checkpoints. Each case here was a traceback (or a silent wrong value) before."""

import builtins
import errno
import io
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
from tests.conftest import TINY_OVERRIDES, bomb_png, float_tiff, key_words, sixteen_bit_png, write_images

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


@pytest.mark.parametrize("command", ["pretrain", "linprobe", "finetune"])  # segment plans as they do (classify)
def test_a_min_lr_above_the_peak_lr_is_one_line(command, tmp_path, capsys):
    """The cosine then rose instead of decaying: the loss went from 2.2 to 48."""
    argv = [command, "--output-dir", str(tmp_path / "out"), *SMALL, "--min-lr", "10"]
    assert main(argv) == 2
    assert re.search(
        r"min lr 10 is above the peak lr [\d.e-]+ \(--blr [\d.e-]+ x effective batch 32 / 256\)",
        one_line_error(capsys, command),
    )
    assert main([*argv, "--lr", "0.001"]) == 2
    assert "min lr 10 is above the peak lr 0.001 (--lr)" in one_line_error(capsys, command)
    assert not (tmp_path / "out").exists()


def test_a_disk_that_fills_up_inside_torch_save_is_one_line(tmp_path, capsys, monkeypatch):
    """torch's zip writer turned the OSError into 'RuntimeError ... unexpected pos': a traceback."""
    from mae_course import safe_files

    class FullDisk(io.FileIO):  # takes the first 4 KB, then is full
        def write(self, data):
            if self.tell() + len(data) > 4096:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(data)

    opened = []

    def filling_up(file, mode="r", *args, **kwargs):
        if ".checkpoint-last.pth.tmp-" in str(file):
            opened.append(file)
            if len(opened) == 2:  # the second checkpoint: the disk is full
                return FullDisk(file, "w")
        return open(file, mode, *args, **kwargs)

    monkeypatch.setattr(safe_files, "open", filling_up, raising=False)
    args = [
        "pretrain",
        "--output-dir",
        str(tmp_path),
        "--subset",
        "32",
        "--batch-size",
        "32",
        "--epochs",
        "3",
        "--model-overrides",
        TINY,
        "--vis-images",
        "0",
        "--device",
        "cpu",
    ]
    assert main(args) == 2
    assert f"{tmp_path / 'checkpoint-last.pth'}: No space left on device" in one_line_error(capsys, "pretrain")
    assert load_checkpoint(tmp_path / "checkpoint-last.pth")["epoch"] == 1  # the old one, intact
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    args = [
        "pretrain",
        "--output-dir",
        str(tmp_path),
        "--subset",
        "64",
        "--batch-size",
        "32",
        "--epochs",
        "3",
        "--model-overrides",
        TINY,
        "--vis-images",
        "0",
        "--device",
        "cpu",
    ]
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
    "args, words",
    [
        (["pretrain", "--model-overrides", '{"patch_size": 0}'], ("patch_size", "positive integer", "0")),
        (
            ["pretrain", "--model-overrides", '{"decoder_depth": -1}'],
            ("decoder_depth", "positive integer", "-1"),
        ),
        (["pretrain", "--model-overrides", '{"mlp_ratio": "x"}'], ("mlp_ratio", "positive number", "'x'")),
        (["pretrain", "--model-overrides", '{"img_size": 64}'], ("img_size", "--image-size")),
        (["finetune", "--mixup", "nan"], ("mixup", "finite", "nan")),
        (["pretrain", "--blr", "inf"], ("blr", "finite", "inf")),
        (["bench", "--mask-ratio", "1.5"], ("mask ratio", "between 0 and 1", "1.5")),
        *[
            (
                ["bench", "--suite", suite, "--models", "mae_vit_mini_patch4_32", "--mask-ratio", "0.99999"],
                ("mask_ratio 0.99999", "no token"),
            )
            for suite in ("table2", "model", "e2e")
        ],
        (["bench", "--model-overrides", '{"depthh": 2}'], ("unknown", "'depthh'")),
        (
            [
                "bench",
                "--suite",
                "model",
                "--models",
                "mae_vit_mini_patch4_32",
                "--model-overrides",
                '{"num_heads": 5}',
            ],
            ("embed_dim=128", "num_heads=5"),
        ),
        (["bench", "--output", "{tmp}"], ("folder", "JSON file")),
        (["bench", "--output", "{tmp}/a_file/results.json"], ("a_file", "not a folder")),
        (["evaluate", "--only", "nosuch"], ("--only", "nosuch", "linprobe, finetune")),
        (["sweep", "--ablation", "decoder_depth", "--values", "x"], ("decoder_depth", "int", "'x'")),
        (["linprobe", "--num-workers", "-1"], ("num workers", ">= 0", "-1")),
        (["pretrain", "--seed", str(10**20)], ("seed", f"0 to {2**32 - 1}", str(10**20))),
        (["finetune", "--seed", "-1"], ("seed", f"0 to {2**32 - 1}", "-1")),
        (["pretrain", "--image-size", "100000"], ("image size", "4096", "100000")),
        (["linprobe", "--image-size", "100000"], ("image size", "4096", "100000")),
        (["pretrain", "--vis-images", "100000"], ("vis images", "0 to 64", "100000")),
        (
            ["pretrain", "--model-overrides", '{"embed_dim": 1099511627776}'],
            ("embed_dim", "16384", "1099511627776"),
        ),
        (
            ["pretrain", "--image-size", "2048"],
            ("2048", "patch size 4", "262144 patches", "65536"),
        ),
    ],
)
def test_bad_values_are_one_line(args, words, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--output-dir" not in argv and argv[0] not in ("bench",):
        argv += ["--output-dir", str(tmp_path / "out")]
    assert main(argv) == 2
    line = one_line_error(capsys, argv[0])
    assert re.search(key_words(*words), line), line


# ---------------------------------------------------------------------------------------- hostile images


def test_a_bad_image_in_a_loader_worker_is_one_line(tmp_path, capsys, image_folder):
    """The worker's 15-line traceback used to be the message."""
    folder = image_folder(per_class=8, size=(40, 40))
    (folder / "train" / "cat" / "cat_3.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    args = [
        "pretrain",
        "--data",
        str(folder),
        "--image-size",
        "16",
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--num-workers",
        "2",
        "--model-overrides",
        TINY,
        "--output-dir",
        str(tmp_path / "run"),
        "--device",
        "cpu",
    ]
    assert main(args) == 2
    err = one_line_error(capsys, "pretrain")
    assert "cannot read image" in err and "cat_3.jpg" in err and "DataLoader worker" not in err


@pytest.mark.parametrize("pipeline", ["cpu", "gpu"])
def test_a_decompression_bomb_is_an_unreadable_image(tmp_path, pipeline, image_folder):
    folder = image_folder(per_class=8, size=(40, 40))
    bomb_png(folder / "train" / "dog" / "dog_bomb.png")
    cfg = dict(
        data=str(folder),
        image_size=16,
        batch_size=4,
        epochs=1,
        model_overrides=dict(TINY_OVERRIDES),
        vis_images=0,
        device="cpu",
        data_pipeline=pipeline,
    )
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
    pretrain(
        PretrainConfig(
            output_dir=str(tmp_path / "run"),
            data=str(folder),
            image_size=16,
            batch_size=4,
            epochs=2,
            model_overrides=dict(TINY_OVERRIDES),
            vis_images=2,
            skip_bad_images=True,
            device="cpu",
        )
    )
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


def test_float_images_are_scaled_not_black(tmp_path):
    """A float32 TIFF (mode F) of values in [0, 1] trained as an all-black image."""
    from mae_course.data.image_files import open_rgb

    assert np.asarray(open_rgb(str(float_tiff(tmp_path / "unit.tiff", 0.25)))).mean() == 64  # [0, 1]: x 255
    assert np.asarray(open_rgb(str(float_tiff(tmp_path / "levels.tiff", 200.0)))).mean() == 200  # [0, 255] as it is
    for value in (-0.5, 300.0, float("nan")):
        path = float_tiff(tmp_path / f"bad{value}.tiff", value)
        with pytest.raises(DataError, match=f"cannot read image {path}: float pixel values from .* expected 0 to 1"):
            open_rgb(str(path))


def test_the_number_of_workers_is_capped_at_the_cores(capsys):
    from mae_course.data.datasets import cpu_cores, loader_workers

    assert loader_workers("x", 100_000) == cpu_cores()
    out = capsys.readouterr().out
    assert re.search(key_words("--num-workers 100000", f"{cpu_cores()} CPU cores", f"using {cpu_cores()}"), out), out
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
    out = capsys.readouterr().out
    assert re.search(key_words("share of the CPU cores", "64 cores / 8 processes", "using 8"), out), out
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert datasets.loader_workers("/data/imagenet") == 8  # alone on the node: at most 8
    assert datasets.loader_workers("/data/imagenet", 10, processes=2) == 10
    monkeypatch.setattr(datasets, "cpu_cores", lambda: 4)
    assert datasets.loader_workers("/data/imagenet", processes=8) == 1  # always at least one for image files


# ---------------------------------------------------------------------------------------- crafted checkpoints


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    pretrain(
        PretrainConfig(
            output_dir=str(out),
            subset=64,
            batch_size=32,
            epochs=1,
            model_overrides=dict(TINY_OVERRIDES),
            vis_images=0,
            device="cpu",
        )
    )
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
    args = [
        "pretrain",
        "--output-dir",
        str(tmp_path / "run"),
        "--resume",
        *SMALL[:4],
        "--epochs",
        "2",
        "--model-overrides",
        TINY,
        "--device",
        "cpu",
    ]
    assert main(args) == 2
    assert "checkpoint" in one_line_error(capsys, "pretrain")


def test_damaged_bytes_inside_a_checkpoint_are_one_line_not_a_nan_loss(finished_run, tmp_path, capsys):
    """Random bytes in checkpoint-last.pth resumed, then stopped with "the loss became nan, try a lower --blr"."""
    (tmp_path / "run").mkdir()
    path = tmp_path / "run" / "checkpoint-last.pth"
    data = bytearray((finished_run / "checkpoint-last.pth").read_bytes())
    weights = load_checkpoint(finished_run / "checkpoint-last.pth")["model"]["blocks.0.mlp.fc1.weight"]
    at = data.find(weights.numpy().tobytes()[:256])
    data[at + 64 : at + 72] = os.urandom(8)
    path.write_bytes(data)
    args = [
        "pretrain",
        "--output-dir",
        str(tmp_path / "run"),
        "--resume",
        *SMALL[:4],
        "--epochs",
        "2",
        "--model-overrides",
        TINY,
        "--device",
        "cpu",
    ]
    assert main(args) == 2
    assert f"{path} is damaged: its part " in one_line_error(capsys, "pretrain")


CRAFTED_MODELS = [
    ({"patch_size": 0}, "model setting patch_size must be a positive integer, got 0"),
    ({"depth": -1}, "model setting depth must be a positive integer, got -1"),
    ({"embed_dim": 2**40}, f"model setting embed_dim must be at most 16384, got {2**40}"),
    ({"depth": 10**9}, f"model setting depth must be at most 256, got {10**9}"),
    ({"mlp_ratio": 1e300}, "model setting mlp_ratio must be at most 64, got 1e+300"),
    ({"embed_dim": 16384, "num_heads": 16, "depth": 256}, "billion parameters, more than 5 billion"),
]


def test_the_size_bound_counts_what_a_model_holds():
    from mae_course import build_model
    from mae_course.model.registry import parameter_count
    from mae_course.model.vit import encoder_settings, vit_from_mae

    for name in ("mae_vit_mini_patch4_32", "mae_vit_tiny_patch8_64"):
        mae = build_model(name)
        for model, settings in ((mae, mae.config), (vit_from_mae(mae.config, 0), encoder_settings(mae.config))):
            held = sum(t.numel() for t in model.state_dict().values())
            assert abs(parameter_count(settings) / held - 1) < 1e-3, (name, type(model).__name__)


@pytest.mark.parametrize("change, message", CRAFTED_MODELS)
def test_a_crafted_model_config_is_refused_before_a_model_is_built(change, message, tmp_path, capsys, monkeypatch):
    """patch_size 0 was a ZeroDivisionError, depth -1 a traceback, embed_dim 2^40 and depth 1e9 ate the memory."""
    from mae_course import load_model
    from mae_course.checkpoint import save_weights
    from mae_course.evaluation.segment import load_segmenter
    from mae_course.model.patches import PatchEmbed
    from mae_course.model.registry import MODEL_CONFIGS

    monkeypatch.setattr(PatchEmbed, "__init__", lambda *a, **k: pytest.fail("began to build a model"))  # both do
    mini = {**MODEL_CONFIGS["mae_vit_mini_patch4_32"], **change}
    path = tmp_path / "model.safetensors"
    save_weights({"w": torch.zeros(1)}, {"model": {**mini, "name": "mae_vit_mini_patch4_32"}}, path, config_json=False)
    with pytest.raises(CheckpointError, match=f"{path} holds a model config that .*{re.escape(message)}"):
        load_model(path)
    for command in ("linprobe", "finetune"):  # an encoder, loaded into the classifier
        assert main([command, "--checkpoint", str(path), "--output-dir", str(tmp_path / command), *SMALL]) == 2
        assert f"{path} holds a model config that " in one_line_error(capsys, command)
    segmenter = tmp_path / "segmenter.safetensors"
    encoder = {k: v for k, v in mini.items() if not k.startswith("decoder")}
    save_weights(
        {"w": torch.zeros(1)},
        {"classifier": {**encoder, "num_classes": 3, "task": "segmentation"}},
        segmenter,
        config_json=False,
    )
    with pytest.raises(CheckpointError, match=f"{segmenter} holds a model config that .*{re.escape(message)}"):
        load_segmenter(str(segmenter))


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
