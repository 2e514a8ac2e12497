"""``prepare``: a pre-resized JPEG copy of an image folder, on a small ImageNet-like tree made here."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mae_course.cli import main
from mae_course.data.datasets import make_dataset
from mae_course.data.prepare import (
    REPORT,
    SETTINGS,
    PrepareConfig,
    find_jobs,
    output_name,
    prepare,
    summary_text,
    target_size,
)
from mae_course.data.transforms import eval_transform
from mae_course.errors import ConfigError, DataError
from tests.conftest import photo, write_images

BOOKKEEPING = (REPORT, SETTINGS, ".lock")
# relative path -> (width, height) of the input; "large" ones have a shorter side above 256
LARGE = {
    "train/n01/a.JPEG": (500, 375),
    "train/n01/b.JPEG": (375, 500),
    "train/n02/c.JPEG": (333, 333),
    "train/n02/deeper/d.JPEG": (640, 257),  # any nesting inside a class folder
    "val/n01/e.png": (400, 300),  # a PNG becomes a JPEG
    "val/n02/f.jpg": (1000, 999),
}
SMALL = {"train/n01/small.JPEG": (200, 150), "val/n02/tiny.JPEG": (64, 256)}  # not upscaled, copied as they are


@pytest.fixture
def src(tmp_path):
    root = write_images(tmp_path / "src", {**LARGE, **SMALL}, quality=95)
    gray = root / "train/n02/gray.JPEG"  # small but grayscale: converted to RGB, not copied
    photo(120, 100, 99).convert("L").save(gray, quality=95)
    (root / "train/LOC_synset_mapping.txt").write_text("not an image\n")  # ignored
    return root


def corrupt(root, relative="train/n01/broken.JPEG"):
    path = root / relative
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return str(path)


def outputs(dst):
    """The images prepare wrote (not its report, its settings or its lock)."""
    return {p.relative_to(dst).as_posix(): p for p in dst.rglob("*") if p.is_file() and p.name not in BOOKKEEPING}


def test_sizes_formats_and_relative_paths(src, tmp_path):
    dst = tmp_path / "dst"
    summary = prepare(PrepareConfig(str(src), str(dst), workers=0), progress=False)
    expected = {output_name(r) for r in [*LARGE, *SMALL, "train/n02/gray.JPEG"]}
    assert set(outputs(dst)) == expected and "val/n01/e.jpg" in expected  # stems kept, .png -> .jpg
    assert summary["images"] == 9 and summary["written"] == 9 and summary["bad"] == 0
    assert (summary["resized"], summary["copied"], summary["converted"]) == (6, 2, 1)

    for relative, (w, h) in LARGE.items():
        with Image.open(dst / output_name(relative)) as out:
            assert out.format == "JPEG" and out.mode == "RGB"
            assert min(out.size) == 256
            long_side, exact = max(out.size), max(w, h) * 256 / min(w, h)
            assert abs(long_side - exact) <= 1  # aspect kept within a pixel
            assert (out.width >= out.height) == (w >= h)
    for relative, size in SMALL.items():
        with Image.open(dst / relative) as out:
            assert out.size == size and out.format == "JPEG"
        assert (dst / relative).read_bytes() == (src / relative).read_bytes()  # no second lossy encoding
    with Image.open(dst / "train/n02/gray.JPEG") as out:
        assert out.mode == "RGB" and out.size == (120, 100)

    assert summary["bytes_in"] == sum(p.stat().st_size for p in src.rglob("*.*") if p.suffix != ".txt")
    assert summary["bytes_out"] == summary["dst_bytes"] == sum(p.stat().st_size for p in outputs(dst).values())
    report = json.loads((dst / REPORT).read_text())
    assert report["written"] == 9 and report["bad_files"] == []
    assert "projected size of ImageNet-1K" in summary_text(summary)


def test_a_second_run_skips_everything_done(src, tmp_path):
    dst = tmp_path / "dst"
    prepare(PrepareConfig(str(src), str(dst), workers=0), progress=False)
    before = {r: p.stat().st_mtime_ns for r, p in outputs(dst).items()}
    (dst / "train/n01/.a.JPEG.123.part").write_bytes(b"half a jpeg")  # left by a killed run
    again = prepare(PrepareConfig(str(src), str(dst), workers=0), progress=False)
    assert again["written"] == 0 and again["skipped_done"] == 9
    assert {r: p.stat().st_mtime_ns for r, p in outputs(dst).items()} == before  # nothing rewritten
    assert again["dst_bytes"] == sum(p.stat().st_size for p in outputs(dst).values())

    (dst / "val/n01/e.jpg").unlink()  # an output missing: only that one is made again
    third = prepare(PrepareConfig(str(src), str(dst), workers=0), progress=False)
    assert third["written"] == 1 and third["skipped_done"] == 8


def test_an_interrupted_write_leaves_no_partial_file(src, tmp_path, monkeypatch):
    dst = tmp_path / "dst"

    def broken_save(self, fp, *args, **kwargs):
        open(fp, "wb").write(b"\xff\xd8\xff half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        prepare(PrepareConfig(str(src), str(dst), workers=0), progress=False)
    assert [p.name for p in dst.rglob("*") if p.is_file() and p.name not in BOOKKEEPING] == []  # no JPEG, no temporary


def test_parallel_workers_give_the_same_result(src, tmp_path):
    serial = prepare(PrepareConfig(str(src), str(tmp_path / "a"), workers=0), progress=False)
    parallel = prepare(PrepareConfig(str(src), str(tmp_path / "b"), workers=2), progress=False)
    assert parallel["written"] == serial["written"] == 9
    a, b = outputs(tmp_path / "a"), outputs(tmp_path / "b")
    assert a.keys() == b.keys() and all(a[r].read_bytes() == b[r].read_bytes() for r in a)


def test_a_corrupt_input_is_named_or_skipped_and_reported(src, tmp_path):
    bad = corrupt(src)
    with pytest.raises(DataError, match="broken.JPEG") as info:
        prepare(PrepareConfig(str(src), str(tmp_path / "dst"), workers=0), progress=False)
    assert bad in str(info.value) and "--skip-bad-images" in str(info.value)

    summary = prepare(PrepareConfig(str(src), str(tmp_path / "dst"), workers=0, skip_bad_images=True), progress=False)
    assert summary["bad"] == 1 and summary["written"] + summary["skipped_done"] == 9
    report = json.loads((tmp_path / "dst" / REPORT).read_text())
    assert [entry["path"] for entry in report["bad_files"]] == [bad]
    assert not (tmp_path / "dst/train/n01/broken.JPEG").exists()
    assert "1 bad" in summary_text(summary)


def test_the_command_line(src, tmp_path, capsys):
    dst = tmp_path / "dst"
    argv = ["prepare", str(src), str(dst), "--short-side", "128", "--quality", "80", "--workers", "0"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "9 images written" in printed and "projected size of ImageNet-1K" in printed
    with Image.open(dst / "train/n01/a.JPEG") as out:
        assert out.size == (171, 128)

    corrupt(src)
    assert main(argv) == 2
    assert "broken.JPEG" in capsys.readouterr().err
    assert main([*argv, "--skip-bad-images"]) == 0
    assert "1 bad" in capsys.readouterr().out


def test_the_output_loads_as_an_image_folder(src, tmp_path):
    dst = tmp_path / "dst"
    prepare(PrepareConfig(str(src), str(dst), workers=0), progress=False)
    train = make_dataset(str(dst), "train", eval_transform(32))
    val = make_dataset(str(dst), "val", eval_transform(32))
    assert len(train) == 6 and len(val) == 3 and train.classes == ["n01", "n02"]
    image, label = train[0]
    assert image.shape == (3, 32, 32) and label == 0


def test_settings_and_paths_are_checked(src, tmp_path):
    assert target_size(500, 375, 256) == (341, 256) and target_size(375, 500, 256) == (256, 341)
    assert target_size(256, 900, 256) is None and target_size(100, 50, 256) is None
    assert output_name("x.JPEG") == "x.JPEG" and output_name("x.jpeg") == "x.jpeg" and output_name("x.webp") == "x.jpg"
    for bad in (dict(short_side=0), dict(quality=0), dict(quality=101), dict(workers=-1)):
        with pytest.raises(ConfigError):
            PrepareConfig(str(src), str(tmp_path / "dst"), **bad).validate()
    with pytest.raises(ConfigError, match="must not be the source"):
        PrepareConfig(str(src), str(src / "resized")).validate()
    with pytest.raises(DataError, match="not found"):
        PrepareConfig(str(tmp_path / "nowhere"), str(tmp_path / "dst")).validate()
    (src / "val/n01/e.jpg").write_bytes((src / "train/n01/a.JPEG").read_bytes())  # e.png and e.jpg collide
    with pytest.raises(DataError, match="would both be written"):
        find_jobs(src, tmp_path / "dst")


def test_only_its_own_temporary_files_are_deleted(src, tmp_path):
    """Every '.*.part' anywhere under DST used to be deleted, a user's own files included."""
    dst = tmp_path / "dst"
    prepare(PrepareConfig(str(src), str(dst), workers=0), progress=False)
    (dst / "val/n01/e.jpg").unlink()
    stale = dst / "val/n01/.e.jpg.4242.part"  # a killed prepare's half-written output
    stale.write_bytes(b"half")
    mine = [dst / "train/n01/.notes.part", dst / "train/.a.JPEG.4242.part", dst / "val/n01/.e.jpg.draft.part"]
    for path in mine:
        path.write_text("a user's file")
    summary = prepare(PrepareConfig(str(src), str(dst), workers=0), progress=False)
    assert summary["written"] == 1 and not stale.exists()
    assert all(path.read_text() == "a user's file" for path in mine)


def test_a_copy_with_other_settings_is_refused_unless_overwritten(src, tmp_path, capsys):
    """A rerun with another --short-side kept the old outputs and reported the new settings."""
    dst = tmp_path / "dst"
    prepare(PrepareConfig(str(src), str(dst), short_side=128, workers=0), progress=False)
    with pytest.raises(ConfigError, match="other settings \\(short_side 128 there, 64 now\\).*--overwrite"):
        prepare(PrepareConfig(str(src), str(dst), short_side=64, workers=0), progress=False)
    summary = prepare(PrepareConfig(str(src), str(dst), short_side=64, workers=0, overwrite=True), progress=False)
    assert summary["written"] == 9 and summary["skipped_done"] == 0
    with Image.open(dst / "train/n01/a.JPEG") as out:
        assert min(out.size) == 64
    assert json.loads((dst / SETTINGS).read_text()) == {"short_side": 64, "quality": 90}
    assert main(["prepare", str(src), str(dst), "--short-side", "32", "--workers", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_symlink_loop_is_walked_once_and_a_fifo_is_skipped(src, tmp_path):
    """A loop turned 2 images into 82 outputs; a FIFO named .jpg made prepare wait forever."""
    import os

    (src / "train/n01/loop").symlink_to(src / "train")  # train/n01/loop/n01/loop/... without end
    os.mkfifo(src / "train/n02/pipe.jpg")
    (src / "train/n02/dangling.jpg").symlink_to(src / "nowhere.jpg")
    found = find_jobs(src, tmp_path / "dst")
    assert len(found.jobs) == 9 and sorted(Path(p).name for p in found.not_files) == ["dangling.jpg", "pipe.jpg"]
    summary = prepare(PrepareConfig(str(src), str(tmp_path / "dst"), workers=0), progress=False)
    assert summary["written"] == 9 and summary["not_files"] == 2
    assert "2 not regular files" in summary_text(summary)


def test_sixteen_bit_images_and_decompression_bombs(src, tmp_path):
    """16-bit grayscale turned white (convert('RGB') clips at 255); a bomb header was a traceback."""
    from tests.conftest import bomb_png, sixteen_bit_png

    sixteen_bit_png(src / "train/n01/deep.png", value=32768)
    bomb = bomb_png(src / "train/n02/bomb.png")
    with pytest.raises(DataError, match="bomb.png: .*decompression bomb"):
        prepare(PrepareConfig(str(src), str(tmp_path / "dst"), workers=0), progress=False)
    summary = prepare(PrepareConfig(str(src), str(tmp_path / "dst"), workers=0, skip_bad_images=True), progress=False)
    assert [entry["path"] for entry in summary["bad_files"]] == [str(bomb)]
    with Image.open(tmp_path / "dst/train/n01/deep.jpg") as out:
        assert out.mode == "RGB" and abs(np.asarray(out).mean() - 128) < 1.5  # 32768 / 256, not 255
