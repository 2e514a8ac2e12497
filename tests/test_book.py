"""The course website (``make book``): it builds with every warning an error, every lesson page
holds its figures, the widget's snapshot and a "Run it yourself" box, and every internal link
and image resolves."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import build_book  # noqa: E402
import build_explorer as explorer  # noqa: E402

LESSONS = build_book.lesson_paths()
URL = build_book.homepage()


class Page(HTMLParser):
    """The links, images and element ids of one HTML page."""

    def __init__(self, text: str):
        super().__init__()
        self.links, self.images, self.ids = [], [], set()
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])


@pytest.fixture(scope="module")
def site(book_site) -> Path:
    return book_site  # built once for the session (tests/conftest.py)


def pages(site: Path) -> dict[Path, Page]:
    return {p: Page(p.read_text()) for p in site.rglob("*.html")}


def text_of(page: Path) -> str:
    """The page's words, without tags."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.read_text()))


def png_outputs(lesson: Path) -> int:
    cells = json.loads(lesson.read_text())["cells"]
    return sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))


def test_every_lesson_has_a_page_in_order_with_its_title(site):
    index = (site / "index.html").read_text()
    positions = []
    for lesson in LESSONS:
        page = site / f"{lesson.stem}.html"
        assert page.is_file(), f"no page for {lesson.name}"
        title = json.loads(lesson.read_text())["cells"][2]["source"][0].removeprefix("# ").strip()
        assert title.split(" · ")[0] in page.read_text()
        positions.append(index.index(f'href="{lesson.stem}.html"'))
    assert positions == sorted(positions), "the sidebar lists the lessons out of order"


def test_every_figure_of_every_lesson_is_on_its_page(site):
    for lesson in LESSONS:
        images = [src for src in Page((site / f"{lesson.stem}.html").read_text()).images if src.startswith("_images/")]
        expected = png_outputs(lesson) + (lesson.stem == "06_seeing")  # + the widget's snapshot
        assert len(images) == expected, f"{lesson.name}: {len(images)} images on its page, {expected} outputs"
        for src in images:
            assert (site / src).stat().st_size > 1000, f"{lesson.name}: {src} is missing or empty"


def test_the_widget_is_shown_as_its_snapshot(site):
    snapshot = (ROOT / "book" / "snapshots" / "06_explorer.png").read_bytes()
    page = (site / "06_seeing.html").read_text()
    shown = [site / src for src in Page(page).images if src.startswith("_images/")]
    assert any(p.read_bytes() == snapshot for p in shown), "the explorer's snapshot is not on lesson 06's page"
    assert build_book.EDITIONS["en"].snapshot_note.split(":")[0] in page
    chinese = (site / "zh" / "06_seeing.html").read_text()
    shown = [site / "zh" / src for src in Page(chinese).images if src.startswith("_images/")]
    assert any(p.read_bytes() == snapshot for p in shown)
    assert build_book.EDITIONS["zh"].snapshot_note.split("：")[0] in chinese


def test_each_page_says_how_to_run_it_yourself(site):
    github = URL.removeprefix("https://github.com/")
    for lesson in LESSONS:
        links = Page((site / f"{lesson.stem}.html").read_text()).links
        for folder in ("notebooks", "solutions"):
            colab = f"https://colab.research.google.com/github/{github}/blob/main/{folder}/{lesson.name}"
            assert colab in links, f"{lesson.name}: no Colab link to {folder}/{lesson.name}"
        assert "make lab" in text_of(site / f"{lesson.stem}.html")


def test_the_home_page_is_the_readme_overview_and_the_reference_follows(site):
    readme = (ROOT / "README.md").read_text()
    overview, reference = readme.split(build_book.REFERENCE_MARK)
    home = (site / "index.html").read_text()
    first_heading = re.search(r"^# (.+)$", overview, re.MULTILINE).group(1)
    assert first_heading.split(":")[0] in home
    for lesson in LESSONS:
        assert f'href="{lesson.stem}.html"' in home
    next_heading = re.search(r"^## (.+)$", reference, re.MULTILINE).group(1)
    assert next_heading.split(":")[0] in (site / "reference.html").read_text()


def test_every_internal_link_and_image_resolves(site):
    parsed = pages(site)
    checked = 0
    for here, page in parsed.items():
        for target in page.links + page.images:
            if re.match(r"^[a-z]+:|^//", target):
                continue
            path, _, anchor = target.partition("#")
            file = (here.parent / path).resolve() if path else here
            assert file.exists(), f"{here.relative_to(site)}: broken link {target}"
            if anchor and file.suffix == ".html":
                assert anchor in parsed[file].ids, f"{here.relative_to(site)}: {target} names no element of its page"
            checked += 1
    assert checked > 200


def test_every_page_links_the_same_page_in_the_other_language(site):
    for lesson in LESSONS:
        english, chinese = site / f"{lesson.stem}.html", site / "zh" / f"{lesson.stem}.html"
        assert f"zh/{lesson.stem}.html" in Page(english.read_text()).links
        assert f"../{lesson.stem}.html" in Page(chinese.read_text()).links
        assert 'lang="zh-CN"' in chinese.read_text()


def test_every_page_of_each_site_links_the_other_site_s_home(site):
    for page in site.glob("*.html"):
        assert "zh/index.html" in Page(page.read_text()).links, f"{page.name}: no link to the Chinese site"
    for page in (site / "zh").glob("*.html"):
        assert "../index.html" in Page(page.read_text()).links, f"zh/{page.name}: no link to the English site"


def test_the_chinese_home_page_is_the_translated_overview(site):
    home = text_of(site / "zh" / "index.html")
    assert "学习者：从这里开始" in home
    for lesson in LESSONS:
        assert f'href="{lesson.stem}.html"' in (site / "zh" / "index.html").read_text()


def test_a_stale_translation_of_the_readme_stops_the_build(monkeypatch):
    monkeypatch.setattr(build_book, "readme_parts", lambda: ("# An edited overview\n", ""))
    with pytest.raises(SystemExit, match="does not translate the README's current overview"):
        build_book.translated_home("zh")


def test_links_to_repository_files_go_to_github_and_lesson_links_stay_on_the_site():
    lessons = {p.name for p in LESSONS}
    target = build_book.link_target
    assert target("notebooks/03_encoder.ipynb", "README.md", lessons, URL) == "03_encoder.ipynb"
    assert target("04_decoder.ipynb#the-loss", "solutions/06_seeing.ipynb", lessons, URL) == "04_decoder.ipynb#the-loss"
    assert target("../mae_course/model/mae.py", "solutions/06_seeing.ipynb", lessons, URL) == (
        f"{URL}/blob/main/mae_course/model/mae.py"
    )
    assert target("tests/README.md", "README.md", lessons, URL) == f"{URL}/blob/main/tests/README.md"
    site_url = build_book.site_url(URL)
    assert target("zh/00_welcome.ipynb", "solutions/00_welcome.ipynb", lessons, URL) == f"{site_url}/zh/00_welcome.html"
    assert target("../00_welcome.ipynb", "solutions/zh/00_welcome.ipynb", lessons, URL) == f"{site_url}/00_welcome.html"
    assert target("01_patches.ipynb", "solutions/zh/00_welcome.ipynb", lessons, URL) == "01_patches.ipynb"
    zh_readme = "translations/zh/README.md"
    assert target("../../notebooks/zh/02_masking.ipynb", zh_readme, lessons, URL) == "02_masking.ipynb"
    for kept in ("https://arxiv.org/abs/2111.06377", "#recap", "mailto:a@b.c"):
        assert target(kept, "README.md", lessons, URL) == kept


def test_a_warning_fails_the_build(tmp_path):
    """The build command treats warnings as errors: a link to a missing page stops it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "index.md").write_text("# Home\n\n[gone](missing.md)\n")
    command = [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", "-c", str(build_book.BOOK)]
    result = subprocess.run([*command, str(src), str(tmp_path / "html")], capture_output=True, text=True)
    assert result.returncode != 0
    assert "missing" in result.stderr


def test_a_snapshot_whose_widget_cell_is_gone_stops_the_build(monkeypatch):
    monkeypatch.setitem(build_book.SNAPSHOTS, ("06_seeing", "no_such_widget.widget"), "06_explorer.png")
    lesson = next(p for p in LESSONS if p.stem == "06_seeing")
    with pytest.raises(SystemExit, match="no_such_widget"):
        build_book.stage_lesson(build_book.EDITIONS["en"], lesson, {p.name for p in LESSONS}, URL)


def test_the_snapshot_output_is_the_png_itself():
    image = build_book.BOOK / "snapshots" / "06_explorer.png"
    output = build_book.snapshot_output(image)
    assert base64.b64decode(output.data["image/png"]) == image.read_bytes()


def test_the_pages_workflow_publishes_what_make_book_builds():
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    steps = workflow["jobs"]["build"]["steps"]
    assert any("scripts/build_book.py" in step.get("run", "") for step in steps)
    upload = next(step for step in steps if step.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "build/book/html"
    assert "scripts/build_book.py" in (ROOT / "Makefile").read_text()


def test_the_explorer_page_is_part_of_both_sites_and_linked_from_home_and_lesson_06(site):
    for root, assets in ((site, "_explorer/"), (site / "zh", "../_explorer/")):
        page = (root / "explorer.html").read_text()
        assert f'<script type="module" src="{assets}explorer.js">' in page
        assert 'id="mae-explorer"' in page and 'id="mx-ratio"' in page
        for name in ("index.html", "06_seeing.html"):
            assert "explorer.html" in Page((root / name).read_text()).links, f"{root / name} does not link the explorer"
    assert "Explorer: MAE in your browser" in text_of(site / "explorer.html")
    assert "探索器：在浏览器中运行 MAE" in text_of(site / "zh" / "explorer.html")


def test_the_explorer_s_files_are_in_the_site_and_nothing_comes_from_elsewhere(site):
    assets = site / "_explorer"
    names = {p.name for p in assets.iterdir()}
    assert set(explorer.ORT_FILES) | {"explorer.js", "explorer.css", "explorer.json"} <= names
    meta = json.loads((assets / "explorer.json").read_text())
    assert (assets / meta["onnx"]).stat().st_size > 1_000_000
    assert len(meta["samples"]["indices"]) == 40 and sorted(set(meta["samples"]["labels"])) == list(range(10))
    assert len(base64.b64decode(meta["samples"]["pixels"])) == 40 * 32 * 32 * 3
    for page in (site / "explorer.html", site / "zh" / "explorer.html", assets / "explorer.js"):
        assert not re.search(r"""(src|href|import)[=( ]*["']https?://""", page.read_text()), (
            f"{page} loads from the web"
        )


def test_a_stale_translation_of_the_explorer_page_stops_the_build(monkeypatch, tmp_path):
    page = tmp_path / "page.md"
    page.write_text((explorer.EXPLORER / "page.md").read_text() + "\nA new English sentence.\n")
    monkeypatch.setattr(explorer, "EXPLORER", tmp_path)
    with pytest.raises(SystemExit, match="does not translate the current book/explorer/page.md"):
        explorer.page("zh")


# ---------------------------------------------------------------------------------------- images and links of a lesson
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def repository(tmp_path, monkeypatch):
    """``write(markdown)``: a repository whose one lesson, solutions/99_tiny.ipynb, holds ``markdown``;
    a figure lies beside it, in solutions/figures/."""
    import nbformat

    monkeypatch.setattr(build_book, "ROOT", tmp_path)
    monkeypatch.setattr(build_book, "SOLUTIONS", tmp_path / "solutions")
    (tmp_path / "solutions" / "figures").mkdir(parents=True)
    (tmp_path / "solutions" / "figures" / "fig.png").write_bytes(PNG)
    (tmp_path / "README.md").write_text(
        f"# Home\n\n[lesson](solutions/99_tiny.ipynb)\n{build_book.REFERENCE_MARK}\n## Ref\n"
    )

    def write(markdown: str) -> Path:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell("# Lesson 99"), nbformat.v4.new_markdown_cell(markdown)]
        nb.cells[0].id, nb.cells[1].id = "l99-00", "l99-01"
        nbformat.write(nb, tmp_path / "solutions" / "99_tiny.ipynb")
        return tmp_path / "solutions" / "99_tiny.ipynb"

    return write


def test_a_local_image_is_copied_onto_the_site_not_linked_to_github(repository, tmp_path):
    """The image became a link to its GitHub blob page (an HTML page, not an image): a broken image."""
    repository("A figure: ![the figure](figures/fig.png), and [the same file](figures/fig.png).")
    build_book.stage(build_book.EDITIONS["en"], tmp_path / "src")
    source = json.loads((tmp_path / "src" / "99_tiny.ipynb").read_text())["cells"][-1]["source"]
    source = "".join(source) if isinstance(source, list) else source
    assert "![the figure](_repository/solutions/figures/fig.png)" in source  # copied beside the page
    assert f"[the same file]({URL}/blob/main/solutions/figures/fig.png)" in source  # a link still goes to GitHub
    assert (tmp_path / "src" / "_repository" / "solutions" / "figures" / "fig.png").read_bytes() == PNG


@pytest.mark.parametrize(
    "markdown, complaint",
    [
        ("![gone](figures/missing.png)", "solutions/99_tiny.ipynb: broken image figures/missing.png"),
        (
            "[gone](../mae_course/no_such_module.py)",
            "solutions/99_tiny.ipynb: broken link ../mae_course/no_such_module.py",
        ),
        ("[gone](98_no_such_lesson.ipynb#top)", "solutions/99_tiny.ipynb: broken link 98_no_such_lesson.ipynb#top"),
        (
            "![outside](../../etc/hostname)",
            "solutions/99_tiny.ipynb: broken image ../../etc/hostname (outside the repository)",
        ),
    ],
)
def test_a_missing_image_or_linked_file_stops_the_build(repository, tmp_path, markdown, complaint):
    lesson = repository(markdown)
    with pytest.raises(SystemExit, match=re.escape(complaint)):
        build_book.stage_lesson(build_book.EDITIONS["en"], lesson, {lesson.name}, URL)
