"""Run the solved lessons from top to bottom at full length and keep their outputs.

    python scripts/run_solutions.py            # every lesson
    python scripts/run_solutions.py 01 05      # some lessons

Each lesson runs in a fresh, empty working folder, as a learner's first run would. Outputs are
then made fit to commit: execution counts 1, 2, 3, ... of this one clean run
(nbval compares the outputs of counted cells), no widget views or widget state (a progress
bar's live view means nothing in a file), no absolute paths. Finally the exercise versions
are regenerated. Run it after editing a lesson (make solutions).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_exercises  # noqa: E402

ROOT = make_exercises.ROOT
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def normalize(nb, folder: str | None = None) -> None:
    """Strip what must not be committed: widget views and state, local paths; number the cells
    1, 2, 3, ... in order."""
    nb.metadata.pop("widgets", None)
    nb.metadata["language_info"] = {"name": "python"}
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        count += 1
        cell.execution_count = count
        cell.metadata.pop("execution", None)
        kept = []
        for output in cell.outputs:
            if WIDGET_VIEW in output.get("data", {}):
                continue
            if output.get("output_type") == "execute_result":
                output["execution_count"] = count
            kept.append(output)
        cell.outputs = kept
    text = nbformat.writes(nb)
    for local in {folder, str(ROOT), str(ROOT.resolve()), os.path.expanduser("~")} - {None}:
        text = text.replace(local, ".")
    nb.clear()
    nb.update(nbformat.reads(text, as_version=4))


def run(path: Path) -> float:
    """Execute a lesson top to bottom in a fresh, empty working folder (so that nothing left by an
    earlier run, e.g. in runs/, changes what it prints), and keep its outputs."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lesson-") as folder:
        NotebookClient(nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": folder}}).execute()
        seconds = time.perf_counter() - start
        normalize(nb, folder)
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str]) -> int:
    os.environ.pop("MAE_COURSE_FAST", None)  # full length: these outputs are what learners get
    paths = sorted(make_exercises.SOLUTIONS.glob("[0-9][0-9]_*.ipynb"))
    if argv:
        paths = [p for p in paths if p.name[:2] in argv]
    make_exercises.main([])  # headers first, so the run sees the final cells
    for path in paths:
        print(f"running {path.relative_to(ROOT)} ...", flush=True)
        print(f"  {run(path):.0f} s", flush=True)
    return make_exercises.main([])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
