"""The lessons as files: generated from one source, well-formed, clean, and honest about
unfinished exercises. (nbval executes them; see the pytest options in pyproject.toml.)"""

import contextlib
import io
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_exercises  # noqa: E402

from mae_course import checks  # noqa: E402

SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
LESSONS = [p.name for p in SOLUTIONS]
EXPECTED_LESSONS = [
    "00_welcome",
    "01_patches",
    "02_masking",
    "03_encoder",
    "04_decoder",
    "05_training",
    "06_seeing",
    "07_evaluation",
    "08_ablation",
    "09_scaling",
    "10_transfer",
]
LOCAL_PATH = re.compile(r"(/work/|/home/|/root/|/Users/|/tmp/|[A-Z]:\\\\)")


def read(folder: str, name: str):
    return nbformat.read(ROOT / folder / name, as_version=4)


def tags(cell) -> list[str]:
    return cell.metadata.get("tags", [])


def test_every_lesson_is_there_in_both_versions():
    assert [p.stem for p in SOLUTIONS] == EXPECTED_LESSONS
    assert sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")) == LESSONS


def test_exercises_are_generated_from_the_solutions():
    """Fails when notebooks/ (or a lesson's header) differs from what the script makes."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = make_exercises.main(["--check"])
    assert status == 0, out.getvalue()


def test_the_generator_strips_solutions_and_keeps_hints():
    source = "def f(x):\n    y = 1\n    # BEGIN SOLUTION\n    # hint: add one\n    return x + y\n    # END SOLUTION\n"
    assert make_exercises.strip_solutions(source, "test") == (
        f'def f(x):\n    y = 1\n    # Hint: add one\n    raise NotImplementedError("{checks.STUB_MARKER}")'
    )
    with pytest.raises(SystemExit, match="without"):
        make_exercises.strip_solutions("# BEGIN SOLUTION\nx = 1\n", "test")


def test_headers_come_from_the_one_home_setting():
    url = make_exercises.homepage()
    github = url.removeprefix("https://github.com/")
    for folder in ("solutions", "notebooks"):
        for name in LESSONS:
            badge, install = read(folder, name).cells[:2]
            assert f"colab.research.google.com/github/{github}/blob/main/{folder}/{name}" in badge.source
            assert f'"mae_course @ git+{url}"' in install.source and "google.colab" in install.source
            assert (
                "torch" not in install.source.split("%pip")[1] and "ipywidgets" not in install.source.split("%pip")[1]
            )


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_structure(name):
    nb = read("solutions", name)
    body = [c for c in nb.cells if "course-header" not in tags(c)]
    assert body[0].cell_type == "markdown" and body[0].source.startswith("# Lesson ")
    assert "**Goal.**" in body[0].source
    last = body[-1]
    assert last.cell_type == "markdown" and "## Recap" in last.source and "**Questions to think about**" in last.source
    exercises = [i for i, c in enumerate(body) if c.cell_type == "code" and "# BEGIN SOLUTION" in c.source]
    assert (len(exercises) == 0) if name.startswith("00") else (1 <= len(exercises) <= 4)
    for i in exercises:  # every exercise is followed by its check
        assert "check" in tags(body[i + 1]) and "check_" in body[i + 1].source


@pytest.mark.parametrize("name", LESSONS)
def test_notebooks_are_clean(name):
    solution, exercise = read("solutions", name), read("notebooks", name)
    for nb in (solution, exercise):
        assert "widgets" not in nb.metadata
        text = nbformat.writes(nb)
        assert "application/vnd.jupyter.widget-view+json" not in text
        assert not LOCAL_PATH.search(text), LOCAL_PATH.search(text)
    counts = [c.execution_count for c in solution.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), "solutions carry the counts of one clean top-to-bottom run"
    assert all(c.execution_count is None and not c.outputs for c in exercise.cells if c.cell_type == "code")


@pytest.mark.parametrize("name", LESSONS)
def test_solved_checks_pass_in_the_committed_outputs(name):
    for cell in read("solutions", name).cells:
        if "check" in tags(cell):
            text = "".join(o.get("text", "") for o in cell.outputs)
            assert text.startswith("✓ ") and "correct" in text, cell.source


def _check_cells(nb):
    """(check function name, the function it checks, source of the cell defining it)."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code):
        if "check" in tags(cell):
            match = re.search(r"(check_\w+)\((\w+)\)", cell.source)
            yield match.group(1), match.group(2), code[i - 1].source


@pytest.mark.parametrize("name", [n for n in LESSONS if not n.startswith("00")])
def test_every_exercise_stub_reports_not_implemented(name, capsys):
    """Each check, run on the stub exactly as the exercise notebook has it, says 'not implemented'."""
    found = 0
    for check_name, function, source in _check_cells(read("notebooks", name)):
        assert "raise NotImplementedError" in source and "# BEGIN SOLUTION" not in source
        namespace: dict = {}
        exec(compile(source, f"{name}:{function}", "exec"), namespace)  # the exercise cell, as given
        getattr(checks, check_name)(namespace[function])
        assert (
            capsys.readouterr().out == checks.not_implemented_message(getattr(checks, check_name).exercise_name) + "\n"
        )
        found += 1
    assert found >= 1


def test_readme_lists_every_lesson():
    readme = (ROOT / "README.md").read_text()
    for name in LESSONS:
        assert f"notebooks/{name}" in readme
