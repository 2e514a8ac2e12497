"""Build the course website from the solved lessons and their committed outputs (``make book``).

    python scripts/build_book.py                  # writes build/book/html/index.html (and html/zh/)
    python scripts/build_book.py --out DIR        # elsewhere

Nothing is executed: the pages show the run that the repository holds. The script stages the
pages of each edition (English, then every translation) in ``build/book/src/<lang>`` and runs
Sphinx on each (myst-nb, the Jupyter Book theme; settings in ``book/conf.py``) with every warning
an error, so a broken link or image fails the build. The English site is ``html/``, the Chinese
one ``html/zh/``; every page links to the same page in the other language.

What the staging does:
- the home page is the README up to its ``<!-- book: reference -->`` line (the overview and the
  learner's path; in Chinese, its translation in translations/zh/README.md); the rest of the
  README (commands, package, tests) is the "Reference" page of the English site;
- each lesson is ``solutions/[<lang>/]NN_name.ipynb`` without its two Colab header cells, and with
  a "Run it yourself" box (the JupyterLab command, Colab badges for the exercise and the solved
  version, the language switch) after its title;
- a widget, which a static page cannot run, is shown as a snapshot image from ``book/snapshots/``;
- links to files of the repository become links to them on GitHub; links between lessons and
  from the README to a lesson become links between pages; a local image is copied beside the
  pages (``_repository/<its path>``); a link or image to a file that is not there stops the build.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import build_explorer as explorer  # noqa: E402  (the explorer page: its own module)
from make_exercises import HEADER_TAG, homepage  # noqa: E402

from translations import read_translation, source_hash, translation_path  # noqa: E402

BOOK, SOLUTIONS = ROOT / "book", ROOT / "solutions"
REFERENCE_MARK = "<!-- book: reference -->"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"

# A widget's cell (lesson, a line of its source) -> the snapshot shown in its place, taken in
# JupyterLab with headless Chromium by scripts/snapshot_widgets.py.
SNAPSHOTS = {("06_seeing", "explorer.widget"): "06_explorer.png"}

_LINK = re.compile(
    r"(!\[[^\]]*\]\(|\]\()([^)\s]+)(\))"
)  # a markdown image or link target: ![alt](target), [text](target)
LOCAL_IMAGES = "_repository"  # where a lesson's own images are copied, beside the staged pages (their repository paths)


@dataclass(frozen=True)
class Edition:
    """One language of the site: where its lessons are, and its words for the parts the build adds."""

    lang: str  # "en", or the folder of a translation ("zh")
    sphinx_language: str
    title: str
    box_title: str
    box: str  # with {clone}, {name}, {folder}, {exercise}, {solved}, {badge}, {other}
    snapshot_note: str
    other_name: str  # the other language, in its own words, for the switch

    @property
    def folder(self) -> str:
        """The lessons' folder below solutions/ and notebooks/ ('' for English)."""
        return "" if self.lang == "en" else self.lang


EDITIONS = {
    "en": Edition(
        "en",
        "en",
        "Masked Autoencoders, from the first patch to ImageNet",
        "Run it yourself",
        "- **JupyterLab:** `{clone}`, then open `notebooks/{folder}{name}` (the exercises, with checks) or "
        "`solutions/{folder}{name}` (solved).\n"
        '- **Colab:** <a href="{exercise}">{badge}</a> the exercises, or <a href="{solved}">the solved lesson</a>.\n'
        "- This page shows the solved lesson and the outputs of its last full run; nothing here runs.\n"
        '- <a href="{other}">中文版</a>',
        "Above: a snapshot of the widget in JupyterLab. Run the lesson to move its controls.",
        "中文",
    ),
    "zh": Edition(
        "zh",
        "zh_CN",
        "掩码自编码器：从第一个图像块到 ImageNet",
        "自己运行",
        "- **JupyterLab：** `{clone}`，然后打开 `notebooks/{folder}{name}`（练习，带自动检查）或 "
        "`solutions/{folder}{name}`（答案）。\n"
        '- **Colab：** <a href="{exercise}">{badge}</a> 练习，或 <a href="{solved}">带答案的课程</a>。\n'
        "- 本页展示的是带答案的课程及其最近一次完整运行的输出；页面上不运行任何代码。\n"
        '- <a href="{other}">English</a>',
        "上图：JupyterLab 中交互控件的快照。运行本课即可拖动其中的控件。",
        "English",
    ),
}


def lesson_paths() -> list[Path]:
    return sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb"))


def site_url(url: str) -> str:
    """Where GitHub Pages publishes the site of the repository ``url``."""
    owner, repo = re.sub(r"^https://github\.com/", "", url).split("/")[:2]
    return f"https://{owner.lower()}.github.io/{repo}"


def link_target(target: str, here: str, lessons: set[str], url: str) -> str:
    """Where a relative link from the file ``here`` (repository path) should point on the site.

    A lesson of the same edition is a page beside this one; a lesson of the other edition is its
    page on the published site; any other file of the repository is its page on GitHub.
    """
    if re.match(r"^[a-z]+:|^#|^/", target):
        return target
    path, _, anchor = target.partition("#")
    resolved = repository_path(path, here, target, "link")
    anchor = f"#{anchor}" if anchor else ""
    parts = resolved.split("/")
    if parts[-1] in lessons and parts[0] in ("notebooks", "solutions") and len(parts) <= 3:
        if parts[1:-1] == here.split("/")[1:-1]:  # the same edition
            return parts[-1] + anchor
        return f"{site_url(url)}/{'/'.join(parts[1:-1] + [Path(parts[-1]).stem])}.html{anchor}"
    if not (ROOT / resolved).exists():
        raise SystemExit(f"{here}: broken link {target} (no file {resolved})")
    return f"{url}/blob/main/{resolved}{anchor}"


def repository_path(path: str, here: str, target: str, what: str) -> str:
    """The repository path of ``path``, relative to the file ``here`` (normalised without the file system)."""
    parts: list[str] = []
    for part in Path(Path(here).parent, path).parts:
        if part == "..":
            if not parts:
                raise SystemExit(f"{here}: broken {what} {target} (outside the repository)")
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


def image_target(target: str, here: str, images: dict[str, Path] | None) -> str:
    """Where an image of the file ``here`` is on the site: a local one is copied beside the pages (a
    GitHub page of it is HTML, not an image) and must exist; a remote one stays where it is."""
    if re.match(r"^[a-z]+:|^/", target):
        return target
    resolved = repository_path(target, here, target, "image")
    if not (ROOT / resolved).is_file():
        raise SystemExit(f"{here}: broken image {target} (no file {resolved})")
    if images is not None:
        images[resolved] = ROOT / resolved
    return f"{LOCAL_IMAGES}/{resolved}"


def rewrite_links(text: str, here: str, lessons: set[str], url: str, images: dict[str, Path] | None = None) -> str:
    """``text`` with its links and images pointed at the site; the local images to copy are added to ``images``."""

    def rewrite(m: re.Match) -> str:
        opening, target = m.group(1), m.group(2)
        new = image_target(target, here, images) if opening.startswith("!") else link_target(target, here, lessons, url)
        return opening + new + m.group(3)

    return _LINK.sub(rewrite, text)


def run_it_yourself(edition: Edition, name: str, url: str) -> str:
    github = re.sub(r"^https://github\.com/", "", url)
    colab = f"https://colab.research.google.com/github/{github}/blob/main"
    folder = f"{edition.folder}/" if edition.folder else ""
    page = Path(name).stem + ".html"
    box = edition.box.format(
        clone=f"git clone {url} && cd {url.rsplit('/', 1)[-1]} && make lab",
        name=name,
        folder=folder,
        exercise=f"{colab}/notebooks/{folder}{name}",
        solved=f"{colab}/solutions/{folder}{name}",
        badge=f'<img src="{COLAB_BADGE}" alt="Open In Colab" style="vertical-align: middle">',
        other=f"../{page}" if edition.folder else f"zh/{page}",
    )
    return f":::{{admonition}} {edition.box_title}\n:class: tip\n{box}\n:::"


def snapshot_output(image: Path) -> nbformat.NotebookNode:
    data = base64.b64encode(image.read_bytes()).decode()
    return nbformat.v4.new_output(
        "display_data",
        data={"image/png": data, "text/plain": f"<snapshot of the widget: {image.name}>"},
    )


def stage_lesson(
    edition: Edition, path: Path, lessons: set[str], url: str, images: dict[str, Path] | None = None
) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if HEADER_TAG not in c.metadata.get("tags", [])]
    if not nb.cells or not nb.cells[0].source.startswith("# "):
        raise SystemExit(f"{path.name}: the first cell after the header must start with the lesson's title")
    here = path.relative_to(ROOT).as_posix()
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = rewrite_links(cell.source, here, lessons, url, images)
    box = nbformat.v4.new_markdown_cell(run_it_yourself(edition, path.name, url))
    box.id = f"{path.stem.split('_')[0]}-run-it-yourself"
    nb.cells.insert(1, box)
    for (stem, line), image in SNAPSHOTS.items():
        if stem != path.stem:
            continue
        cells = [c for c in nb.cells if c.cell_type == "code" and line in c.source.splitlines()]
        if len(cells) != 1:
            raise SystemExit(f"{path.name}: {len(cells)} code cells have the line {line!r}; update SNAPSHOTS")
        cells[0].outputs = [snapshot_output(BOOK / "snapshots" / image)]
        note = nbformat.v4.new_markdown_cell(f"*{edition.snapshot_note}*" + explorer.lesson_note(edition.lang))
        note.id = f"{cells[0].id}-snapshot"
        nb.cells.insert(nb.cells.index(cells[0]) + 1, note)
    return nb


def readme_parts() -> tuple[str, str]:
    """The README's overview (the English home page) and its reference part."""
    text = (ROOT / "README.md").read_text()
    if REFERENCE_MARK not in text:
        raise SystemExit(f"README.md has no {REFERENCE_MARK!r} line between the overview and the reference")
    home, reference = text.split(REFERENCE_MARK, 1)
    return home, reference


def translated_home(lang: str) -> str:
    """The translation of the README's overview; a stale or missing one stops the build."""
    block = read_translation(translation_path(lang, "README")).get("overview")
    current = source_hash(readme_parts()[0])
    if block is None or block.sha != current:
        raise SystemExit(
            f"{translation_path(lang, 'README').relative_to(ROOT)} does not translate the README's current overview "
            f"(block 'overview' with sha256:{current} expected)"
        )
    return block.text + "\n"


def stage(edition: Edition, src: Path) -> list[str]:
    """Write one edition's pages into ``src``; returns the lesson page names in order."""
    url = homepage()
    paths = lesson_paths()
    lessons = {p.name for p in paths}
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    images: dict[str, Path] = {}  # repository path -> file, of every local image the pages show
    for path in paths:
        source = SOLUTIONS / edition.folder / path.name
        nbformat.write(stage_lesson(edition, source, lessons, url, images), src / path.name)
    toctree = "\n".join(p.stem for p in paths)
    caption = "Lessons" if edition.lang == "en" else "课程"
    if edition.lang == "en":
        home, reference = readme_parts()
        home = rewrite_links(home, "README.md", lessons, url, images)
        reference = "# Reference: the commands and the package\n\n" + rewrite_links(
            reference, "README.md", lessons, url, images
        )
        (src / "reference.md").write_text(reference)
        extra = "\n```{toctree}\n:hidden:\n:caption: Practitioners\n:maxdepth: 1\n\nreference\n```\n"
    else:
        home = rewrite_links(
            translated_home(edition.lang), f"translations/{edition.lang}/README.md", lessons, url, images
        )
        extra = ""
    home += f"\n```{{toctree}}\n:hidden:\n:caption: {caption}\n:maxdepth: 1\n\n{toctree}\n```\n"
    (src / f"{explorer.PAGE}.md").write_text(explorer.page(edition.lang))
    home += (
        explorer.home_note(edition.lang) + f"\n```{{toctree}}\n:hidden:\n:maxdepth: 1\n\n{explorer.PAGE}\n```\n" + extra
    )
    (src / "index.md").write_text(home)
    for resolved, file in images.items():
        (src / LOCAL_IMAGES / resolved).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, src / LOCAL_IMAGES / resolved)
    return [p.stem for p in paths]


def build(out: Path) -> float:
    """Stage and build every edition into ``out`` / html; returns the seconds it took."""
    start = time.perf_counter()
    for edition in EDITIONS.values():
        src, html = out / "src" / edition.lang, out / "html" / edition.folder
        stage(edition, src)
        command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-c", str(BOOK)]
        command += ["-D", f"language={edition.sphinx_language}", "-D", f"html_title={edition.title}"]
        env = {**os.environ, "MAE_COURSE_BOOK_EDITION": edition.lang}  # book/conf.py's language switch
        result = subprocess.run([*command, str(src), str(html)], check=False, env=env)
        if result.returncode:
            raise SystemExit(
                f"the {edition.lang} site did not build (sphinx exit status {result.returncode}); see the warnings above"
            )
    explorer.build_assets(out / "html")  # the explorer page's model, samples and onnxruntime-web, for both editions
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book", help="output folder (default: build/book)")
    args = parser.parse_args()
    seconds = build(args.out)
    print(f"built the site in {seconds:.1f} s: {args.out / 'html' / 'index.html'}")


if __name__ == "__main__":
    main()
