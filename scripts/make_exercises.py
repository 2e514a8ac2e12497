"""Generate the exercise lessons in notebooks/ from the solved lessons in solutions/.

    python scripts/make_exercises.py           # rewrite notebooks/ (and the solutions' headers)
    python scripts/make_exercises.py --check   # change nothing; exit 1 if anything is out of date

The solutions are the single source. In every code cell, the lines between
``# BEGIN SOLUTION`` and ``# END SOLUTION`` become a stub: the block's ``# hint:`` lines (as
``# Hint: ...``, in a translated edition its own word), then ``raise NotImplementedError("your code
here")``: the marker, ``mae_course.checks.STUB_MARKER``, by which a check knows an exercise not
written yet (any other NotImplementedError is a mistake).
The exercise versions carry no outputs and no execution counts: a learner starts from a clean
notebook (and nbval simply runs every cell of them).

The first two cells of every lesson (tagged ``course-header``: the "Open in Colab" badge and
the Colab-only install) are written from the one setting that names the course's home,
``[project.urls] Homepage`` in pyproject.toml. A translated edition's install cell also sets the
language of the exercise checks (``translations.LANGUAGE_SETTING``), the one line of code by which
its program differs from the English one.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

from mae_course.checks import STUB_MARKER
from translations import HEADER_TAG, IMPORT_OS, LANGUAGE_SETTING, LANGUAGES, read_notebook, translated

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS, EXERCISES = ROOT / "solutions", ROOT / "notebooks"
BEGIN, END, HINT = "# BEGIN SOLUTION", "# END SOLUTION", "# hint:"
HINT_LABEL = {"": "# Hint: ", "zh": "# 提示："}  # how a stub shows its hints, per edition


def homepage() -> str:
    """The course's home URL, from pyproject.toml (a GitHub repository URL)."""
    match = re.search(r'^Homepage\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    if not match:
        raise SystemExit("pyproject.toml has no [project.urls] Homepage")
    return match.group(1).rstrip("/")


def header_cells(url: str, folder: str, name: str, stem: str) -> list:
    github = re.sub(r"^https://github\.com/", "", url)
    lang = folder.partition("/")[2]  # "" for English
    other = f" · [English](../{name})" if lang else f" · [中文版](zh/{name})"  # the other edition
    setting = f"{IMPORT_OS}\nimport sys\n\n{LANGUAGE_SETTING.format(lang=lang)}\n" if lang else "import sys\n\n"
    badge = nbformat.v4.new_markdown_cell(
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"(https://colab.research.google.com/github/{github}/blob/main/{folder}/{name}){other}"
    )
    install = nbformat.v4.new_code_cell(
        "# On Colab only: install the course package. Colab's own torch and ipywidgets are kept as they are.\n"
        f"{setting}"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install --quiet "mae_course @ git+{url}"'
    )
    for i, cell in enumerate((badge, install)):
        cell.id = f"{stem}-header-{i}"
        cell.metadata["tags"] = [HEADER_TAG]
    return [badge, install]


def with_header(nb, url: str, folder: str, path: Path):
    """The notebook with its header cells (re)written for ``folder``."""
    nb = copy.deepcopy(nb)
    old = {c.id: c for c in nb.cells if HEADER_TAG in c.metadata.get("tags", [])}
    body = [c for c in nb.cells if HEADER_TAG not in c.metadata.get("tags", [])]
    header = header_cells(url, folder, path.name, path.stem.split("_")[0])
    # an unchanged header cell keeps its place in the run (its execution count)
    header = [old[c.id] if c.id in old and old[c.id].source == c.source else c for c in header]
    nb.cells = header + body
    return nb


def strip_solutions(source: str, where: str, label: str = HINT_LABEL[""]) -> str:
    """Replace every BEGIN/END SOLUTION block by its hints (each after ``label``) and a NotImplementedError."""
    out, block, indent, hints = [], False, "", []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith(BEGIN):
            if block:
                raise SystemExit(f"{where}: nested {BEGIN}")
            block, indent, hints = True, line[: len(line) - len(line.lstrip())], []
        elif stripped.startswith(END):
            if not block:
                raise SystemExit(f"{where}: {END} without {BEGIN}")
            out += [f"{indent}{label}{h}" for h in hints]
            out.append(f'{indent}raise NotImplementedError("{STUB_MARKER}")')
            block = False
        elif block:
            if stripped.lower().startswith(HINT):
                hints.append(stripped[len(HINT) :].removeprefix(" "))
        else:
            out.append(line)
    if block:
        raise SystemExit(f"{where}: {BEGIN} without {END}")
    return "\n".join(out)


def exercise_version(solution, path: Path, lang: str = ""):
    nb = copy.deepcopy(solution)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source, f"{path.name} cell {cell.id}", HINT_LABEL[lang])
            cell.execution_count = None
            cell.outputs = []
    return nb


def expected_files() -> dict[Path, str]:
    """Every lesson file as it should be: solutions with their header, exercises generated, and
    both again in every translated edition (scripts/translations.py)."""
    url, files = homepage(), {}
    for path in sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb")):
        english = read_notebook(path)  # a byte that is not UTF-8: one line naming it
        editions = {"": english, **{lang: translated(english, lang, path.stem) for lang in LANGUAGES}}
        for lang, edition in editions.items():  # "" is English, in solutions/ and notebooks/ themselves
            sub = f"/{lang}" if lang else ""
            solution = with_header(edition, url, f"solutions{sub}", path)
            files[SOLUTIONS / lang / path.name] = nbformat.writes(solution) + "\n"
            exercise = with_header(exercise_version(solution, path, lang), url, f"notebooks{sub}", path)
            files[EXERCISES / lang / path.name] = nbformat.writes(exercise) + "\n"
    return files


def lesson_files() -> set[Path]:
    """The lesson files that exist now, apart from the English solutions (the source)."""
    found = set(EXERCISES.glob("*.ipynb"))
    for lang in LANGUAGES:
        found |= set((SOLUTIONS / lang).glob("*.ipynb")) | set((EXERCISES / lang).glob("*.ipynb"))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report out-of-date files and exit 1; write nothing")
    args = parser.parse_args(argv)
    files = expected_files()
    stale = [p for p, text in files.items() if not p.exists() or p.read_bytes() != text.encode()]
    extra = sorted(lesson_files() - set(files))
    if args.check:
        for path in stale + extra:
            print(f"out of date: {path.relative_to(ROOT)}")
        if stale or extra:
            print("run: python scripts/make_exercises.py")
        return 1 if stale or extra else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path])
        print(f"wrote {path.relative_to(ROOT)}")
    for path in extra:
        path.unlink()
        print(f"removed {path.relative_to(ROOT)} (no solution for it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
