"""The package's architecture, checked: folders by part of the story, imports that only go down,
lesson-named modules matched by their checks, small files, and a light ``import mae_course``."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mae_course"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))

# Lower layers never import higher ones: the model knows nothing of data or training, data
# nothing of training, training nothing of evaluation, and so on. The checks import reference
# functions from any layer, and only the command line imports the jobs' commands from the top.
LAYERS = [
    {"errors", "safe_files", "lesson", "provenance", "checkpoint", "config"},
    {"model"},
    {"interop"},
    {"figures"},
    {"data"},
    {"seeing"},
    {"train"},
    {"evaluation"},
    {"experiments"},
    {"checks"},
    {"cli", "__main__", "__init__"},
]


def part(path: Path) -> str:
    """The layer name of a module: its folder under mae_course/, or its own name at the top."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def layer(name: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if name in names)


def imported_parts(path: Path) -> set[str]:
    """The parts of mae_course a module imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(PACKAGE).parent.parts
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = list(package[: len(package) - (node.level - 1)])
            target = base + (node.module.split(".") if node.module else [])
            if not target:  # "from .. import x": x is a module of the package
                target = [node.names[0].name]
            found.add(target[0])
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mae_course."):
            found.add(node.module.split(".")[1])
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_go_down(path):
    own = layer(part(path))
    upward = sorted(p for p in imported_parts(path) if p != part(path) and layer(p) > own)
    assert not upward, f"{path.relative_to(PACKAGE)} (layer {part(path)}) imports {upward}, a higher layer"


def test_the_layering_test_sees_imports():
    assert {"model", "data", "train"} <= imported_parts(PACKAGE / "train" / "pretrain.py")
    assert imported_parts(PACKAGE / "model" / "registry.py") >= {"checkpoint", "errors"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_file_over_about_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400


LESSON_FOLDERS = ("model", "data", "train", "evaluation", "experiments", "seeing")


@pytest.mark.parametrize(
    "path",
    [p for p in MODULES if part(p) in LESSON_FOLDERS and p.name != "__init__.py"],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_every_module_opens_with_the_lesson_it_serves(path):
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert docstring.startswith(("Lesson ", "Lessons ")), docstring[:60]


@pytest.mark.parametrize("check", sorted((PACKAGE / "checks").glob("[a-z]*.py")), ids=lambda p: p.stem)
def test_each_check_file_is_named_after_its_reference_module(check):
    """checks/<name>.py checks the exercises of the module <folder>/<name>.py, and imports from it."""
    matches = [p for p in PACKAGE.glob(f"*/{check.name}") if part(p) != "checks"]
    assert len(matches) == 1, f"no single module named {check.name} for checks/{check.name}: {matches}"
    source = check.read_text()
    assert f"{part(matches[0])}.{check.stem} import" in source or f"{part(matches[0])} import {check.stem}" in source


def test_import_mae_course_stays_light():
    """The lessons' first import loads the model code, not plotting, widgets, the benchmark peers or ONNX."""
    code = "import sys, mae_course; print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy}))".format(
        heavy={"matplotlib", "ipywidgets", "transformers", "timm", "IPython", "onnx", "onnxscript", "onnxruntime"}
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_top_level_names_the_lessons_use_keep_working():
    import mae_course

    for name in (
        "patchify",
        "unpatchify",
        "random_masking",
        "build_model",
        "load_model",
        "MaskedAutoencoder",
        "sincos_pos_embed",
        "unshuffle_with_mask_tokens",
        "masked_mse_loss",
        "norm_pix_target",
    ):
        assert callable(getattr(mae_course, name)), name


def test_every_subpackage_is_installed():
    """pyproject.toml lists the packages a wheel (Colab's install) holds: every folder of the package."""
    import re

    line = re.search(r"^packages = \[(.*)\]$", (PACKAGE.parent / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    listed = set(re.findall(r'"([\w.]+)"', line))
    folders = {".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")}
    assert folders <= listed, sorted(folders - listed)
