"""The Chinese edition: every markdown cell and every exercise hint translated from the current
English, Chinese spacing, the glossary's terms glossed once in the course, and the same program:
code cells byte for byte but for the hints' text and the checks' language setting, outputs those
of the English run with the checks' verdicts in Chinese (scripts/translations.py,
scripts/make_exercises.py)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

from mae_course.checks import verdicts

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


def test_glossary_terms_are_glossed_once_in_the_course():
    assert translations.first_use_problems(LANG) == []


def test_the_checks_messages_are_translated_from_the_current_english():
    assert translations.message_problems(LANG) == []


@pytest.mark.parametrize("name", ["glossary.md", "README.md"])
def test_the_glossary_and_the_readme_have_no_stray_spaces(name):
    assert translations.stray_spaces((ROOT / "translations" / LANG / name).read_text()) == []


def verdicts_in(outputs: list, lang: str) -> list:
    """The outputs with every check's English success line in ``lang``."""
    said, out = verdicts(lang), []
    for output in outputs:
        output = dict(output)
        if output.get("output_type") == "stream":
            output["text"] = "".join(
                said.get(line.rstrip("\n"), line.rstrip("\n")) + "\n" * line.endswith("\n")
                for line in output["text"].splitlines(keepends=True)
            )
        out.append(output)
    return out


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_one_program_two_narrations(lesson):
    """Both Chinese versions have the English cells in order. The rule: code byte for byte, except the
    text of the ``# hint:`` comments and the checks' language, set in the first code cell; outputs
    copied, the checks' verdicts in Chinese."""
    english = {"solutions": read(lesson), "notebooks": read(ROOT / "notebooks" / lesson.name)}
    for folder, source in english.items():
        chinese = read(ROOT / folder / LANG / lesson.name)
        assert [c.id for c in chinese.cells] == [c.id for c in source.cells], f"{folder}/{LANG}: cells differ"
        code = [(en, zh) for en, zh in zip(source.cells, chinese.cells, strict=True) if en.cell_type == "code"]
        for en, zh in zip(source.cells, chinese.cells, strict=True):
            assert zh.cell_type == en.cell_type
            if en.cell_type == "code":
                where = f"{folder}/{LANG}/{lesson.name} cell {en.id}"
                assert translations.program(zh.source, LANG) == translations.program(en.source), (
                    f"{where}: the code differs"
                )
                expected = verdicts_in(en.outputs, LANG) if "check" in en.metadata.get("tags", []) else en.outputs
                assert zh.outputs == expected, f"{where}: the outputs differ"
                assert zh.metadata == en.metadata
        setting = translations.LANGUAGE_SETTING.format(lang=LANG)
        assert setting in code[0][1].source and setting not in code[0][0].source, (
            "the first code cell sets the language"
        )
        assert sum(setting in zh.source for _, zh in code) == 1
        hinted = [(en, zh) for en, zh in code if translations.hints(en.source)]
        assert all(translations.hints(zh.source) != translations.hints(en.source) for en, zh in hinted)
        assert all(
            translations.UNTRANSLATED[LANG] not in c.source
            for c in translations.translatable(chinese)
            if c.cell_type == "markdown"
        )


def test_the_rule_of_one_program_catches_a_changed_line():
    english = "import torch\n\n# hint: one row\nx = torch.ones(3)"
    assert translations.program("import torch\n\n# hint: 一行\nx = torch.ones(3)", LANG) == translations.program(
        english
    )
    assert translations.program("import torch\n\n# hint: 一行\nx = torch.ones(4)", LANG) != translations.program(
        english
    )
    header = "# On Colab only\nimport sys\n\nif x:\n    pass"
    translated = (
        f"# On Colab only\nimport os\nimport sys\n\n{translations.LANGUAGE_SETTING.format(lang=LANG)}\nif x:\n    pass"
    )
    assert translations.program(translated, LANG) == translations.program(header)
    assert translations.program(translated.replace('"zh"', '"en"'), LANG) != translations.program(header)


def test_lesson_00_s_road_map_names_every_lesson_by_its_title():
    """Each row of the road map, in both editions, is lesson NN's own title."""
    for folder, heading in (("solutions", r"# Lesson (\d\d) · (.+)"), (f"solutions/{LANG}", r"# 第 (\d\d) 课 · (.+)")):
        titles = {}
        for path in sorted((ROOT / folder).glob("[0-9][0-9]_*.ipynb")):
            first = next(c.source for c in translations.translatable(read(path)) if c.cell_type == "markdown")
            number, title = re.match(heading, first.splitlines()[0]).groups()
            titles[number] = title
        welcome = "\n".join(
            c.source for c in read(ROOT / folder / "00_welcome.ipynb").cells if c.cell_type == "markdown"
        )
        rows = dict(re.findall(r"^\| (\d\d) (.+?) \| ", welcome, re.M))
        rows = {n: re.sub(r"（[^）]*）", "", title) for n, title in rows.items()}  # a row may gloss a term
        assert rows == {n: t for n, t in titles.items() if n != "00"}, folder


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
        "masked autoencoder": "掩码自编码器",
        "patch": "图像块",
        "masking ratio": "掩码比例",
        "encoder": "编码器",
        "decoder": "解码器",
        "mask token": "掩码标记",
        "linear probing": "线性探测",
        "fine-tuning": "微调",
        "positional embedding": "位置编码",
        "reconstruction target": "重建目标",
    }
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
    out.write_text(out.read_text().replace("# Lesson 99 · Patches", "# 第 99 课 · 图像块\n\n一个图像块"))
    return path


def test_a_changed_english_cell_makes_its_translation_stale(tiny):
    assert translations.problems(LANG, tiny) == []
    assert translations.translated(read(tiny), LANG, "99_tiny").cells[0].source == "# 第 99 课 · 图像块\n\n一个图像块"
    nb = read(tiny)
    nb.cells[0].source = "# Lesson 99 · Images as patches"  # a later edit of the English
    nbformat.write(nb, tiny)
    (problem,) = translations.problems(LANG, tiny)
    assert "cell l99-00 is stale: its English changed since it was translated" in problem
    shown = translations.translated(read(tiny), LANG, "99_tiny").cells[0].source
    assert shown.startswith(translations.UNTRANSLATED[LANG]) and shown.endswith("# Lesson 99 · Images as patches")


def test_a_block_left_in_english_is_reported(tiny):
    out = translations.translation_path(LANG, "99_tiny")
    out.write_text(out.read_text().replace("# 第 99 课 · 图像块\n\n一个图像块", "# Lesson 99 · Patches"))
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
    assert "cell l99-00 is not a markdown cell or a cell with hints of 99_tiny.ipynb" in " ".join(
        translations.problems(LANG, tiny)
    )


def test_the_first_use_rule_is_enforced(tiny):
    out = translations.translation_path(LANG, "99_tiny")
    assert translations.first_use_problems(LANG) == [
        "99_tiny: first use of 图像块 in the course should read 图像块（patch）, found 图像块''"
    ]
    out.write_text(out.read_text().replace("一个图像块", "一个图像块（patch）"))
    assert translations.first_use_problems(LANG) == []


def test_a_gloss_goes_once_in_the_course_outside_headings_and_parentheses(tiny):
    """The heading's use does not count; a second gloss, one in parentheses or a plural one is refused."""
    out = translations.translation_path(LANG, "99_tiny")
    text = out.read_text()
    out.write_text(
        text.replace("一个图像块", "一个图像块（patch）").replace("# 第 99 课 · 图像块", "# 第 99 课 · 图像块（patch）")
    )
    assert translations.first_use_problems(LANG) == [
        "99_tiny: 图像块 is glossed in a heading; gloss it at its first use in the text"
    ]
    out.write_text(text.replace("一个图像块", "一个图像块（patch）（两个图像块（patch））"))
    assert translations.first_use_problems(LANG) == [
        "99_tiny: 图像块 is glossed inside parentheses; gloss it at its first use in the text"
    ]
    out.write_text(text.replace("一个图像块", "一个图像块（patches）"))
    assert translations.first_use_problems(LANG) == ["99_tiny: the gloss of 图像块 is plural; write 图像块（patch）"]
    out.write_text(text.replace("一个图像块", "一个图像块（patch），另一个图像块（patch）"))
    assert translations.first_use_problems(LANG) == [
        "99_tiny: 图像块 is glossed again (first used in 99_tiny); gloss only its first use"
    ]


def test_a_space_between_chinese_characters_is_reported(tiny):
    """The spaces left where "2-core" became 双核; Chinese takes spaces only next to Latin letters and digits."""
    out = translations.translation_path(LANG, "99_tiny")
    out.write_text(out.read_text().replace("一个图像块", "在一台空闲的 双核 CPU 上，一个图像块"))
    (problem,) = translations.problems(LANG, tiny)
    assert "has a space between Chinese characters" in problem and "空闲的 双核" in problem
    for spaced in ("图像块 。", "。 图像块", "图 像块"):
        assert translations.stray_spaces(f"一个{spaced}") != [], spaced
    for fine in ("第 99 课", "在 CPU 上", "`a b` 图像块", "**目标。** 图像块", "50 个图像块，"):
        assert translations.stray_spaces(fine) == [], fine


def test_exercise_hints_are_translated_and_go_stale_like_prose(tiny):
    nb = read(tiny)
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "def f():\n    # BEGIN SOLUTION\n    # hint: add one\n    return 1\n    # END SOLUTION"
        )
    )
    nb.cells[-1].id = "l99-02"
    nbformat.write(nb, tiny)
    assert translations.problems(LANG, tiny) == [f"translations/{LANG}/99_tiny.md: cell l99-02 has no translation"]
    assert translations.skeleton(LANG, tiny) == 1
    out = translations.translation_path(LANG, "99_tiny")
    out.write_text(out.read_text().replace("\nadd one\n", "\n加一\n"))
    assert translations.problems(LANG, tiny) == []
    built = translations.translated(read(tiny), LANG, "99_tiny").cells[-1].source
    assert "    # hint: 加一\n" in built and translations.program(built, LANG) == translations.program(
        nb.cells[-1].source
    )
    nb.cells[-1].source = nb.cells[-1].source.replace("add one", "add two")
    nbformat.write(nb, tiny)
    (problem,) = translations.problems(LANG, tiny)
    assert "cell l99-02 is stale" in problem
    assert "# hint: add two" in translations.translated(read(tiny), LANG, "99_tiny").cells[-1].source


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
