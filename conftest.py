"""Settings for the whole test session: unit tests and the lessons run by nbval alike.

Notebook kernels are started by nbval after this file is loaded, and inherit these variables.
"""

import os
import tempfile

# Lessons shrink their training to seconds; a learner's own run never sets this.
os.environ["MAE_COURSE_FAST"] = "1"
# The built-in data is generated into a cache of the session's own, not the user's.
os.environ.setdefault("MAE_COURSE_CACHE", tempfile.mkdtemp(prefix="mae_course_cache_"))
os.environ.setdefault("MPLBACKEND", "Agg")

# ---- report how long each lesson takes under the tests (the course's budget is 60 s each)
_notebook_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _notebook_seconds[path] = _notebook_seconds.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if not _notebook_seconds:
        return
    terminalreporter.section("lesson times under nbval (fast mode; kernel start included)")
    for path, seconds in sorted(_notebook_seconds.items()):
        terminalreporter.write_line(f"{seconds:6.1f} s  {path}")


# The translated editions (solutions/zh/, notebooks/zh/) run the English lessons' code byte for
# byte, with the English outputs: tests/test_translations.py checks that, and nbval runs each
# program once, in English, to keep the suite short.
collect_ignore_glob = ["solutions/*/*.ipynb", "notebooks/*/*.ipynb"]
