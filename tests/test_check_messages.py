"""The checks speak the lesson's language: every message in English and Chinese from one catalogue,
a stale Chinese message caught by the hash of its English (and said in English meanwhile), and a
Chinese lesson's own first cell making its checks answer in Chinese."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

from mae_course import checks
from mae_course.checks import messages
from mae_course.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def english_unless_asked(monkeypatch):
    """Every test starts in English and leaves the language as it found it."""
    monkeypatch.delenv(messages.ENV, raising=False)
    checks.use_language(None)
    yield
    checks.use_language(None)


def test_every_message_id_has_both_languages():
    english = messages.english()
    assert len(english) > 200
    assert messages.problems("zh") == []
    assert set(messages.translations("zh")) == set(english)


def test_every_exercise_says_what_it_checked_in_both_languages():
    for name in checks._core.EXERCISES:
        assert f"{name}.checked" in messages.english()
        assert checks.passed(name, "zh") != checks.passed(name, "en")
        assert checks.passed(name, "zh").startswith(f"✓ {name} 正确（检查了：")


def test_a_message_id_is_defined_once():
    with pytest.raises(ValueError, match="check message random_masking.inverted is defined twice"):
        messages.define({"random_masking.inverted": "another text"})


def test_a_stale_chinese_message_is_reported_and_said_in_english(monkeypatch):
    """As with the lessons' cells: the hash of the English it translated no longer matches."""
    key = "random_masking.inverted"
    chinese = messages.say(key, "zh")
    assert chinese.startswith("random_masking：掩码在保留的标记处为 1")
    changed = "random_masking: the mask is 1 where tokens are kept; 1 means removed"  # a later edit of the English
    monkeypatch.setitem(messages._ENGLISH, key, changed)
    (problem,) = messages.problems("zh")
    assert problem.startswith(f"mae_course/checks/zh.md: message {key} is stale: its English changed")
    assert messages.say(key, "zh") == changed  # never a stale translation shown as current


def test_a_missing_a_left_over_and_a_wrongly_filled_message_are_reported(monkeypatch):
    done = dict(messages.translations("zh"))
    key = "random_masking.kept"
    monkeypatch.setitem(done, key, done[key]._replace(text=done[key].text.replace("{expected}", "{wanted}")))
    monkeypatch.setitem(done, "random_masking.gone", done[key])
    del done["random_masking.inverted"]
    monkeypatch.setattr(messages, "translations", lambda lang: done)
    assert messages.problems("zh") == [
        f"mae_course/checks/zh.md: message {key} has the fields ['case', 'kept', 'wanted', 'why'], "
        "the English ['case', 'expected', 'kept', 'why']",
        "mae_course/checks/zh.md: message random_masking.inverted has no translation",
        "mae_course/checks/zh.md: message random_masking.gone is not a message of the checks (removed?)",
    ]


def test_the_language_comes_from_use_language_then_the_environment(monkeypatch):
    assert checks.language() == "en"
    monkeypatch.setenv(messages.ENV, "zh")
    assert checks.language() == "zh"
    checks.use_language("en")
    assert checks.language() == "en"
    checks.use_language(None)
    monkeypatch.setenv(messages.ENV, "fr")
    with pytest.raises(ConfigError, match="MAE_COURSE_LANG is 'fr'; the checks speak en or zh"):
        checks.language()
    with pytest.raises(ConfigError, match="the language is 'de'"):
        checks.use_language("de")


def cell(nb, cell_id: str) -> str:
    return next(c.source for c in nb.cells if c.id == cell_id)


def run_cell(source: str, namespace: dict) -> str:
    """Run a notebook cell's code as IPython would (magics included); its printed output."""
    out = io.StringIO()
    with redirect_stdout(out):
        exec(TransformerManager().transform_cell(source), namespace)
    return out.getvalue()


def test_a_wrong_implementation_in_a_chinese_lesson_gets_the_chinese_message(monkeypatch):
    """The Chinese lesson 10 as a learner runs it: its first code cell, a wrong exercise, its check."""
    monkeypatch.setenv(messages.ENV, "en")  # restored after the test, whatever the lesson's cell sets
    lesson = nbformat.read(ROOT / "notebooks" / "zh" / "10_transfer.ipynb", as_version=4)
    namespace: dict = {}
    run_cell(lesson.cells[1].source, namespace)  # the install cell: on Colab only; here it sets the language
    assert checks.language() == "zh"
    stub = cell(lesson, "l10-16")
    assert "# 提示：类别 c 的并集是它的行加上它的列" in stub  # the hint is in Chinese too
    run_cell(stub, namespace)
    assert run_cell(cell(lesson, "l10-17"), namespace).startswith("… iou_per_class：还没有实现。")
    wrong = stub.replace('raise NotImplementedError("your code here")', "return confusion.diag() / confusion.sum(1)")
    run_cell(wrong.replace("confusion.diag()", "confusion.double().diag()"), namespace)
    with pytest.raises(checks.CheckFailed) as failure:
        run_cell(cell(lesson, "l10-17"), namespace)
    assert str(failure.value) == (
        "iou_per_class：除以的是真实为 c 的像素（行）：那是召回率，不是 IoU；并集还包括被错误预测为 c 的像素"
    )


def test_a_chinese_solution_prints_the_verdict_it_stores(monkeypatch):
    """The stored outputs of the Chinese edition are what its checks print."""
    monkeypatch.setenv(messages.ENV, "en")
    lesson = nbformat.read(ROOT / "solutions" / "zh" / "10_transfer.ipynb", as_version=4)
    namespace: dict = {}
    run_cell(lesson.cells[1].source, namespace)
    run_cell(cell(lesson, "l10-16"), namespace)
    check = next(c for c in lesson.cells if c.id == "l10-17")
    assert run_cell(check.source, namespace) == "".join(o["text"] for o in check.outputs)
    assert check.outputs[0]["text"].startswith("✓ iou_per_class 正确")
