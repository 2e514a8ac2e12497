"""The Chinese edition: every markdown cell translated from the current English, the glossary's
terms introduced with their English, and the same program: code cells byte for byte and outputs
those of the English run (scripts/translations.py, scripts/make_exercises.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import translations  # noqa: E402

LESSONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
LANG = "zh"


def read(path: Path):
    return nbformat.read(path, as_version=4)


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_every_cell_is_translated_from_the_current_english(lesson):
    assert translations.problems(LANG, lesson) == []


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_glossary_terms_are_introduced_with_their_english(lesson):
    assert translations.first_use_problems(LANG, lesson.stem) == []


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_one_program_two_narrations(lesson):
    """Both Chinese versions have the English cells in order; code byte for byte, outputs copied."""
    english = {"solutions": read(lesson), "notebooks": read(ROOT / "notebooks" / lesson.name)}
    for folder, source in english.items():
        chinese = read(ROOT / folder / LANG / lesson.name)
        assert [c.id for c in chinese.cells] == [c.id for c in source.cells], f"{folder}/{LANG}: cells differ"
        for en, zh in zip(source.cells, chinese.cells, strict=True):
            assert zh.cell_type == en.cell_type
            if en.cell_type == "code":
                assert zh.source == en.source, f"{folder}/{LANG}/{lesson.name} cell {en.id}: the code differs"
                assert zh.outputs == en.outputs, f"{folder}/{LANG}/{lesson.name} cell {en.id}: the outputs differ"
                assert zh.metadata == en.metadata
        assert all(translations.UNTRANSLATED[LANG] not in c.source for c in translations.translatable(chinese))


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_each_chinese_lesson_s_badge_opens_its_own_file_and_links_the_english(lesson):
    for folder in ("solutions", "notebooks"):
        badge = read(ROOT / folder / LANG / lesson.name).cells[0].source
        assert f"/blob/main/{folder}/{LANG}/{lesson.name})" in badge
        assert f"[English](../{lesson.name})" in badge
        assert f"[中文版]({LANG}/{lesson.name})" in read(ROOT / folder / lesson.name).cells[0].source


def test_lesson_00_links_the_other_edition_in_its_text():
    english = "\n".join(c.source for c in translations.translatable(read(ROOT / "solutions" / "00_welcome.ipynb")))
    chinese = "\n".join(c.source for c in translations.translatable(read(ROOT / "solutions/zh/00_welcome.ipynb")))
    assert "](zh/00_welcome.ipynb)" in english
    assert "](../00_welcome.ipynb)" in chinese


def test_the_glossary_holds_the_field_s_terms():
    terms = translations.glossary(LANG)
    expected = {
        "masked autoencoder": "掩码自编码器", "patch": "图像块", "masking ratio": "掩码比例", "encoder": "编码器",
        "decoder": "解码器", "mask token": "掩码标记", "linear probing": "线性探测", "fine-tuning": "微调",
        "positional embedding": "位置编码", "reconstruction target": "重建目标",
    }  # fmt: skip
    assert expected.items() <= terms.items()
    assert len(terms) >= 30
    assert len(set(terms.values())) == len(terms), "two English terms share one Chinese term"


# ---- the drift detection itself, on a lesson of two cells


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A one-lesson course: solutions/99_tiny.ipynb and its translation."""
    monkeypatch.setattr(translations, "SOLUTIONS", tmp_path / "solutions")
    monkeypatch.setattr(translations, "TRANSLATIONS", tmp_path / "translations")
    monkeypatch.setattr(translations, "ROOT", tmp_path)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Lesson 99 · Patches"), nbformat.v4.new_code_cell("x = 1  # one")]
    nb.cells[0].id, nb.cells[1].id = "l99-00", "l99-01"
    path = tmp_path / "solutions" / "99_tiny.ipynb"
    path.parent.mkdir()
    (tmp_path / "translations" / LANG).mkdir(parents=True)
    glossary = ROOT / "translations" / LANG / "glossary.md"
    (tmp_path / "translations" / LANG / "glossary.md").write_text(glossary.read_text())
    nbformat.write(nb, path)
    assert translations.skeleton(LANG, path) == 1
    out = translations.translation_path(LANG, "99_tiny")
    out.write_text(out.read_text().replace("# Lesson 99 · Patches", "# 第 99 课 · 图像块"))
    return path


def test_a_changed_english_cell_makes_its_translation_stale(tiny):
    assert translations.problems(LANG, tiny) == []
    assert translations.translated(read(tiny), LANG, "99_tiny").cells[0].source == "# 第 99 课 · 图像块"
    nb = read(tiny)
    nb.cells[0].source = "# Lesson 99 · Images as patches"  # a later edit of the English
    nbformat.write(nb, tiny)
    (problem,) = translations.problems(LANG, tiny)
    assert "cell l99-00 is stale: its English changed since it was translated" in problem
    shown = translations.translated(read(tiny), LANG, "99_tiny").cells[0].source
    assert shown.startswith(translations.UNTRANSLATED[LANG]) and shown.endswith("# Lesson 99 · Images as patches")


def test_a_block_left_in_english_is_reported(tiny):
    out = translations.translation_path(LANG, "99_tiny")
    out.write_text(out.read_text().replace("# 第 99 课 · 图像块", "# Lesson 99 · Patches"))
    assert translations.problems(LANG, tiny) == [
        f"translations/{LANG}/99_tiny.md: cell l99-00 is still the English text"
    ]


def test_a_new_english_cell_has_no_translation_and_a_removed_one_is_left_over(tiny):
    nb = read(tiny)
    nb.cells.append(nbformat.v4.new_markdown_cell("## Recap"))
    nb.cells[-1].id = "l99-02"
    nbformat.write(nb, tiny)
    assert translations.problems(LANG, tiny) == [f"translations/{LANG}/99_tiny.md: cell l99-02 has no translation"]
    nb.cells = nb.cells[1:]
    nbformat.write(nb, tiny)
    assert "cell l99-00 is not a markdown cell of 99_tiny.ipynb" in " ".join(translations.problems(LANG, tiny))


def test_the_first_use_rule_is_enforced(tiny):
    out = translations.translation_path(LANG, "99_tiny")
    assert translations.first_use_problems(LANG, "99_tiny") == ["99_tiny: first use of 图像块 should read "
                                                                "图像块（patch）, found 图像块''"]  # fmt: skip
    out.write_text(out.read_text().replace("图像块", "图像块（patch）"))
    assert translations.first_use_problems(LANG, "99_tiny") == []


def test_a_line_break_between_chinese_characters_is_reported(tiny):
    """Markdown renders a soft line break as a space, which Chinese text must not have."""
    out = translations.translation_path(LANG, "99_tiny")
    out.write_text(
        out.read_text().replace("# 第 99 课 · 图像块", "# 第 99 课 · 图像块\n\n一个图像块\n是一个向量。\n- 列表\n- 项")
    )
    (problem,) = translations.problems(LANG, tiny)
    assert "breaks a line between two Chinese characters" in problem and "图像块⏎是一个向量" in problem


def test_a_non_utf8_byte_is_one_line_naming_the_file_and_the_place(tiny, monkeypatch):
    """status, skeleton and `make lessons` stopped with a UnicodeDecodeError traceback."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import make_exercises

    out = translations.translation_path(LANG, "99_tiny")
    out.write_bytes(out.read_bytes().replace("图像块".encode(), b"\xff\xfe"))
    lines = out.read_bytes().split(b"\n")
    line = next(i for i, text in enumerate(lines) if b"\xff" in text)
    column = lines[line].index(b"\xff") + 1
    where = f"line {line + 1}, column {column}"
    with pytest.raises(SystemExit, match=rf"^translations/{LANG}/99_tiny.md is not UTF-8: byte 0xff at {where}$"):
        translations.problems(LANG, tiny)
    tiny.write_bytes(tiny.read_bytes().replace(b"x = 1", b"x = \xe9"))  # the English solution, saved as Latin-1
    monkeypatch.setattr(make_exercises, "SOLUTIONS", tiny.parent)
    monkeypatch.setattr(make_exercises, "EXERCISES", tiny.parent.parent / "notebooks")
    with pytest.raises(SystemExit, match=r"99_tiny.ipynb is not UTF-8: byte 0xe9 at line \d+, column \d+$"):
        make_exercises.main(["--check"])


def test_a_block_with_an_unclosed_code_fence_is_refused(tiny):
    """The rest of the cell would render as code; status and `make lessons` accepted it."""
    out = translations.translation_path(LANG, "99_tiny")
    out.write_text(out.read_text().replace("# 第 99 课 · 图像块", "# 第 99 课 · 图像块\n\n```python\nx = 1\n"))
    line = out.read_text().splitlines().index("```python") + 1
    message = (
        rf"translations/{LANG}/99_tiny.md: cell l99-00 opens a code fence \(```\) at line {line} and never closes it"
    )
    with pytest.raises(SystemExit, match=message):
        translations.problems(LANG, tiny)
    with pytest.raises(SystemExit, match=message):  # what make_exercises builds the edition with
        translations.translated(read(tiny), LANG, "99_tiny")
    out.write_text(out.read_text().replace("x = 1\n", "x = 1\n```\n"))
    assert translations.problems(LANG, tiny) == []
