"""Build the course website from the solved lessons and their committed outputs (``make book``).

    python scripts/build_book.py                  # writes build/book/html/index.html
    python scripts/build_book.py --out DIR        # elsewhere

Nothing is executed: the pages show the run that the repository holds. The script stages the
pages in ``build/book/src`` and runs Sphinx (myst-nb, the Jupyter Book theme; settings in
``book/conf.py``) with every warning an error, so a broken link or image fails the build.

What the staging does:
- the home page is the README up to its ``<!-- book: reference -->`` line (the overview and the
  learner's path); the rest of the README (commands, package, tests) is the "Reference" page;
- each lesson is ``solutions/NN_name.ipynb`` without its two Colab header cells, and with a
  "Run it yourself" box (the JupyterLab command, Colab badges for the exercise and the solved
  version) after its title;
- a widget, which a static page cannot run, is shown as a snapshot image from ``book/snapshots/``;
- links to files of the repository become links to them on GitHub; links between lessons and
  from the README to a lesson become links between pages.
"""

from __future__ import annotations

import argparse
import base64
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from make_exercises import HEADER_TAG, homepage  # noqa: E402

BOOK, SOLUTIONS = ROOT / "book", ROOT / "solutions"
REFERENCE_MARK = "<!-- book: reference -->"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"

# A widget's cell (lesson, a line of its source) -> the snapshot shown in its place, taken in
# JupyterLab with headless Chromium by scripts/snapshot_widgets.py.
SNAPSHOTS = {("06_seeing", "explorer.widget"): "06_explorer.png"}

SNAPSHOT_NOTE = "Above: a snapshot of the widget in JupyterLab. Run the lesson to move its controls."

_LINK = re.compile(r"(\]\()([^)\s]+)(\))")  # a markdown link target: [text](target)


def lesson_paths() -> list[Path]:
    return sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb"))


def link_target(target: str, here: str, lessons: set[str], url: str) -> str:
    """Where a relative link from the file ``here`` (repository path) should point on the site."""
    if re.match(r"^[a-z]+:|^#|^/", target):
        return target
    path, _, anchor = target.partition("#")
    resolved = (Path(here).parent / path).as_posix()
    resolved = "/".join(p for p in Path(resolved).parts if p != ".")
    while "/../" in f"/{resolved}/":  # normalise a/b/../c without touching the file system
        resolved = re.sub(r"(^|/)[^/]+/\.\.(/|$)", r"\1", resolved, count=1)
    name = Path(resolved).name
    if name in lessons and Path(resolved).parent.name in ("notebooks", "solutions"):
        return name + (f"#{anchor}" if anchor else "")
    return f"{url}/blob/main/{resolved}" + (f"#{anchor}" if anchor else "")


def rewrite_links(text: str, here: str, lessons: set[str], url: str) -> str:
    return _LINK.sub(lambda m: m.group(1) + link_target(m.group(2), here, lessons, url) + m.group(3), text)


def run_it_yourself(name: str, url: str) -> str:
    github = re.sub(r"^https://github\.com/", "", url)
    colab = f"https://colab.research.google.com/github/{github}/blob/main"
    badge = f'<img src="{COLAB_BADGE}" alt="Open In Colab" style="vertical-align: middle">'
    return (
        ":::{admonition} Run it yourself\n"
        ":class: tip\n"
        f"- **JupyterLab:** `git clone {url} && cd {url.rsplit('/', 1)[-1]} && make lab`, then open "
        f"`notebooks/{name}` (the exercises, with checks) or `solutions/{name}` (solved).\n"
        f'- **Colab:** <a href="{colab}/notebooks/{name}">{badge}</a> the exercises, '
        f'or <a href="{colab}/solutions/{name}">the solved lesson</a>.\n'
        "- This page shows the solved lesson and the outputs of its last full run; nothing here runs.\n"
        ":::"
    )


def snapshot_output(image: Path) -> nbformat.NotebookNode:
    data = base64.b64encode(image.read_bytes()).decode()
    return nbformat.v4.new_output(
        "display_data",
        data={"image/png": data, "text/plain": f"<snapshot of the widget: {image.name}>"},
    )


def stage_lesson(path: Path, lessons: set[str], url: str) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if HEADER_TAG not in c.metadata.get("tags", [])]
    if not nb.cells or not nb.cells[0].source.startswith("# "):
        raise SystemExit(f"{path.name}: the first cell after the header must start with the lesson's title")
    here = f"solutions/{path.name}"
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = rewrite_links(cell.source, here, lessons, url)
    box = nbformat.v4.new_markdown_cell(run_it_yourself(path.name, url))
    box.id = f"{path.stem.split('_')[0]}-run-it-yourself"
    nb.cells.insert(1, box)
    for (stem, line), image in SNAPSHOTS.items():
        if stem != path.stem:
            continue
        cells = [c for c in nb.cells if c.cell_type == "code" and line in c.source.splitlines()]
        if len(cells) != 1:
            raise SystemExit(f"{path.name}: {len(cells)} code cells have the line {line!r}; update SNAPSHOTS")
        cells[0].outputs = [snapshot_output(BOOK / "snapshots" / image)]
        note = nbformat.v4.new_markdown_cell(f"*{SNAPSHOT_NOTE}*")
        note.id = f"{cells[0].id}-snapshot"
        nb.cells.insert(nb.cells.index(cells[0]) + 1, note)
    return nb


def split_readme(url: str, lessons: set[str]) -> tuple[str, str]:
    """The README's overview (the home page) and its reference part, links rewritten."""
    text = (ROOT / "README.md").read_text()
    if REFERENCE_MARK not in text:
        raise SystemExit(f"README.md has no {REFERENCE_MARK!r} line between the overview and the reference")
    home, reference = text.split(REFERENCE_MARK, 1)
    home = rewrite_links(home, "README.md", lessons, url)
    reference = rewrite_links(reference, "README.md", lessons, url).lstrip()
    return home, "# Reference: the commands and the package\n\n" + reference


def stage(src: Path) -> list[str]:
    """Write the site's sources into ``src``; returns the lesson page names in order."""
    url = homepage()
    paths = lesson_paths()
    lessons = {p.name for p in paths}
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for path in paths:
        nbformat.write(stage_lesson(path, lessons, url), src / path.name)
    home, reference = split_readme(url, lessons)
    toctree = "\n".join(p.stem for p in paths)
    home += f"\n```{{toctree}}\n:hidden:\n:caption: Lessons\n:maxdepth: 1\n\n{toctree}\n```\n"
    home += "\n```{toctree}\n:hidden:\n:caption: Practitioners\n:maxdepth: 1\n\nreference\n```\n"
    (src / "index.md").write_text(home)
    (src / "reference.md").write_text(reference)
    return [p.stem for p in paths]


def build(out: Path) -> float:
    """Stage and build the site into ``out`` / html; returns the seconds it took."""
    start = time.perf_counter()
    stage(out / "src")
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-c", str(BOOK)]
    result = subprocess.run([*command, str(out / "src"), str(out / "html")], check=False)
    if result.returncode:
        raise SystemExit(f"the site did not build (sphinx exit status {result.returncode}); see the warnings above")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book", help="output folder (default: build/book)")
    args = parser.parse_args()
    seconds = build(args.out)
    print(f"built the site in {seconds:.1f} s: {args.out / 'html' / 'index.html'}")


if __name__ == "__main__":
    main()
