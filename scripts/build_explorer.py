"""The website's explorer page: lesson 06's masking explorer, live in the reader's browser.

    python scripts/build_explorer.py DIR     # only the assets, into DIR/_explorer (build_book.py does it all)

scripts/build_book.py calls this module for four things:

- :func:`page`: the page of an edition (``book/explorer/page.md``, or its translation in
  ``translations/<lang>/explorer.md``, whose hash must match the English: a stale one stops the
  build), with the explorer's controls and panels in place of its ``<!-- the explorer -->`` line;
- :func:`home_note` and :func:`lesson_note`: the links to it from the home page and lesson 06;
- :func:`build_assets`: into ``html/_explorer/``, which both editions share:
  - onnxruntime-web's WebAssembly build, from the npm package pinned by ``book/explorer/package-lock.json``
    (``npm ci`` runs here when ``node_modules`` is missing or older than the lock): nothing from a CDN;
  - the shipped mini MAE, exported with :mod:`mae_course.seeing.onnx_export`;
  - ``explorer.json``: the model's settings, 40 built-in test images (4 of each shape), and
    matplotlib's magma colour map, so the error map has the Python explorer's colours;
  - ``explorer.js`` and ``explorer.css`` from ``book/explorer/``.
"""

from __future__ import annotations

import base64
import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from translations import read_translation, source_hash, translation_path  # noqa: E402

EXPLORER = ROOT / "book" / "explorer"
PAGE = "explorer"  # the page's name in each edition
ASSETS = "_explorer"  # the folder of html/ that holds the explorer's files
MARK = "<!-- the explorer -->"
ORT_FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm")  # the WASM backend, its glue bundled
PER_CLASS = 4  # built-in test images per shape

WORDS = {
    "en": {
        "ratio": "masking ratio",
        "sampling": "sampling",
        "random": "random",
        "block": "block",
        "grid": "grid",
        "new_mask": "new mask",
        "upload": "your own image",
        "original": "original",
        "masked": "masked",
        "reconstruction": "reconstruction",
        "pasted": "reconstruction + visible",
        "error": "error per removed patch (grey: visible)",
        "samples": "Built-in images (the test split):",
        "click": "Click a patch to hide or show it.",
        "grid_note": "grid sampling keeps one patch of every 2x2 cell: its ratio is always 75%",
        "home": "**Try MAE in your browser:** the [explorer](explorer.md) runs the course's mini MAE in the page. "
        "Move the masking ratio and watch it reconstruct, with nothing to install.",
        "lesson": "**Live:** the [explorer page](explorer.md) runs this explorer in your browser, no install needed.",
        "messages": {
            "loading": "Loading the model…",
            "ready": "Model loaded in {ms} ms; move the controls.",
            "kept": "{kept} of {total} patches visible",
            "summary": "{image}: mean squared error on the {n} removed patches = {error}",
            "nothingRemoved": "Nothing is removed at 0%: move the ratio up.",
            "lastPatch": "At least one patch must stay visible.",
            "sample": "built-in test image {index}: {shape}",
            "yours": "{name}, resized to 32x32",
            "unreadable": "{name} is not an image this browser can read",
            "failed": "The explorer stopped: {error}",
            "fileProtocol": "This page needs a web server: browsers do not run WebAssembly from file:// pages. "
            "Run python -m http.server -d build/book/html and open http://localhost:8000/explorer.html",
        },
        "classes": ["disk", "ring", "triangle", "square", "plus", "star", "crescent", "arrow", "ell", "triad"],
    },
    "zh": {
        "ratio": "掩码比例",
        "sampling": "采样方式",
        "random": "随机",
        "block": "块状",
        "grid": "网格",
        "new_mask": "换一个掩码",
        "upload": "你自己的图片",
        "original": "原图",
        "masked": "掩码后",
        "reconstruction": "重建",
        "pasted": "重建 + 可见块",
        "error": "每个被移除块的误差（灰色：可见）",
        "samples": "内置图片（测试集）：",
        "click": "点击一个图像块即可隐藏或显示它。",
        "grid_note": "网格采样在每个 2x2 单元中保留一个图像块：比例总是 75%",
        "home": "**在浏览器中试试 MAE：**[探索器](explorer.md)在网页中运行课程的 mini MAE。拖动掩码比例，看它重建图像，无需安装任何东西。",
        "lesson": "**在线版：**[探索器页面](explorer.md)在你的浏览器中运行这个探索器，无需安装。",
        "messages": {
            "loading": "正在加载模型…",
            "ready": "模型已在 {ms} 毫秒内加载；拖动控件试试。",
            "kept": "64 个图像块中可见 {kept} 个".replace("64", "{total}"),
            "summary": "{image}：{n} 个被移除图像块的均方误差 = {error}",
            "nothingRemoved": "比例为 0% 时没有图像块被移除：把比例调高。",
            "lastPatch": "至少要有一个图像块保持可见。",
            "sample": "内置测试图片 {index}：{shape}",
            "yours": "{name}，已缩放到 32x32",
            "unreadable": "{name} 不是这个浏览器能读取的图片",
            "failed": "探索器已停止：{error}",
            "fileProtocol": "本页需要一个网页服务器：浏览器不会在 file:// 页面中运行 WebAssembly。"
            "请运行 python -m http.server -d build/book/html，然后打开 http://localhost:8000/zh/explorer.html",
        },
        "classes": ["圆盘", "圆环", "三角形", "正方形", "加号", "星形", "新月", "箭头", "L 形", "三圆点"],
    },
}


def assets_url(lang: str) -> str:
    """Where an edition's explorer page finds the shared files: html/_explorer/ (html/zh/ is one level down)."""
    return f"{ASSETS}/" if lang == "en" else f"../{ASSETS}/"


def _panel(name: str, caption: str) -> str:
    side = 8 if name == "error" else 32  # the error map has one pixel per patch
    clickable = "" if name == "original" else ' class="mx-clickable"'
    bar = '<div class="mx-bar">0 <span class="mx-gradient"></span> <span id="mx-scale-top"></span></div>'
    return (
        f'<figure><canvas id="mx-{name}" width="{side}" height="{side}"{clickable}></canvas>'
        f"<figcaption>{caption}</figcaption>{bar if name == 'error' else ''}</figure>"
    )


def widget(lang: str) -> str:
    """The explorer's controls and panels: raw HTML in the page, one block (no blank line)."""
    w = WORDS[lang]
    data = json.dumps({**w["messages"], "classes": w["classes"]}, ensure_ascii=False).replace("'", "&#39;")
    options = "".join(f'<option value="{s}">{w[s]}</option>' for s in ("random", "block", "grid"))
    panels = "".join(_panel(name, w[name]) for name in ("original", "masked", "reconstruction", "pasted", "error"))
    return (
        f'<div id="mae-explorer" class="mae-explorer" data-assets="{assets_url(lang)}" data-words=\'{data}\'>\n'
        f'<link rel="stylesheet" href="{assets_url(lang)}explorer.css">\n'
        f'<div class="mx-controls"><label>{w["ratio"]} <input type="range" id="mx-ratio" min="0" max="0.98" '
        f'step="0.01" value="0.75"> <output id="mx-ratio-value">75%</output></label> <span id="mx-kept"></span>\n'
        f'<label>{w["sampling"]} <select id="mx-sampling">{options}</select></label>\n'
        f'<button type="button" id="mx-new-mask">{w["new_mask"]}</button>\n'
        f'<label>{w["upload"]} <input type="file" id="mx-upload" accept="image/*"></label></div>\n'
        f'<div class="mx-note" id="mx-grid-note" hidden>{w["grid_note"]}</div>\n'
        f'<div class="mx-panels">{panels}</div>\n'
        f'<div class="mx-status" id="mx-status" role="status"></div>\n'
        f'<div class="mx-summary" id="mx-summary"></div><div class="mx-note">{w["click"]}</div>\n'
        f'<div class="mx-note">{w["samples"]}</div><div class="mx-samples" id="mx-samples"></div>\n'
        f"</div>\n\n"
        f'<script type="module" src="{assets_url(lang)}explorer.js"></script>\n'
        # A browser loads no module from a file:// page, so this one says what to do instead.
        '<script>if (location.protocol === "file:") { const s = document.getElementById("mx-status"); '
        'if (s) { s.textContent = JSON.parse(document.getElementById("mae-explorer").dataset.words).fileProtocol; '
        's.classList.add("mx-error"); } }</script>\n'
    )


def page_text(lang: str) -> str:
    """The page's markdown in one language; a stale or missing translation stops the build."""
    english = (EXPLORER / "page.md").read_text()
    if lang == "en":
        return english
    block = read_translation(translation_path(lang, PAGE)).get("page")
    if block is None or block.sha != source_hash(english):
        raise SystemExit(
            f"{translation_path(lang, PAGE).relative_to(ROOT)} does not translate the current book/explorer/page.md "
            f"(block 'page' with sha256:{source_hash(english)} expected)"
        )
    return block.text + "\n"


def page(lang: str) -> str:
    text = page_text(lang)
    if text.count(MARK) != 1:
        raise SystemExit(f"the explorer page ({lang}) must have one {MARK!r} line, where the explorer goes")
    return text.replace(MARK, widget(lang))


def home_note(lang: str) -> str:
    return f"\n{WORDS[lang]['home']}\n"


def lesson_note(lang: str) -> str:
    return f"\n\n{WORDS[lang]['lesson']}"


def npm_install() -> Path:
    """book/explorer/node_modules from the lock file (``npm ci``), unless it is already up to date."""
    modules = EXPLORER / "node_modules"
    stamp = modules / ".package-lock.json"  # npm writes it on every install
    lock = EXPLORER / "package-lock.json"
    if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("the explorer page needs npm (Node.js) to install onnxruntime-web: install nodejs and npm")
        command = [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"]
        if subprocess.run(command, cwd=EXPLORER, check=False).returncode:
            raise SystemExit("npm ci in book/explorer failed; see its messages above")
    return modules / "onnxruntime-web" / "dist"


def explorer_json(onnx_name: str) -> dict:
    """The settings, samples and colour map the page reads."""
    import matplotlib
    import torch

    from mae_course import load_model
    from mae_course.data.builtin import CLASSES, load_split
    from mae_course.data.shipped import shipped_checkpoint
    from mae_course.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from mae_course.model.masking import block_mask_noise

    model = load_model(str(shipped_checkpoint()))
    images, labels = load_split("test", model.patch_embed.img_size)
    indices = [i for c in range(len(CLASSES)) for i in (labels == c).nonzero().flatten()[:PER_CLASS].tolist()]
    pixels = images[indices].permute(0, 2, 3, 1).contiguous().numpy().tobytes()  # (N, H, W, 3) uint8
    magma = (matplotlib.colormaps["magma"](torch.arange(256).numpy())[:, :3] * 255).round().astype("uint8")
    length = model.num_patches
    return {
        "onnx": onnx_name,
        "checkpoint": shipped_checkpoint().name,
        "config": model.config,
        "img_size": model.patch_embed.img_size,
        "patch_size": model.patch_size,
        "grid": list(model.grid_size),
        "norm_pix_loss": model.norm_pix_loss,
        "eps": 1e-6,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "grey": 0.6,
        "block": {
            "min_block": max(1, length // 12),
            "aspect_range": inspect.signature(block_mask_noise).parameters["aspect_range"].default,
        },
        "magma": base64.b64encode(magma.tobytes()).decode(),
        "samples": {
            "indices": indices,
            "labels": [int(labels[i]) for i in indices],
            "classes": list(CLASSES),
            "pixels": base64.b64encode(pixels).decode(),
        },
    }


def gradient(meta: dict) -> str:
    """The colour bar's CSS, the same magma as the error map."""
    lut = base64.b64decode(meta["magma"])
    stops = ", ".join(f"rgb({lut[3 * k]},{lut[3 * k + 1]},{lut[3 * k + 2]})" for k in range(0, 256, 32))
    return f".mae-explorer .mx-bar span.mx-gradient {{ background: linear-gradient(to right, {stops}, rgb(252,253,191)); }}\n"


def build_assets(html: Path) -> dict[str, int]:
    """Write html/_explorer/ (see the module's docstring); returns each file's size in bytes."""
    from mae_course import load_model
    from mae_course.data.shipped import shipped_checkpoint
    from mae_course.seeing.onnx_export import export_onnx

    dist = npm_install()
    out = html / ASSETS
    out.mkdir(parents=True, exist_ok=True)
    for name in ORT_FILES:
        shutil.copyfile(dist / name, out / name)
    onnx_name = "mae_vit_mini_builtin32.onnx"
    export_onnx(load_model(str(shipped_checkpoint())), out / onnx_name)
    meta = explorer_json(onnx_name)
    (out / "explorer.json").write_text(json.dumps(meta))
    shutil.copyfile(EXPLORER / "explorer.js", out / "explorer.js")
    (out / "explorer.css").write_text((EXPLORER / "explorer.css").read_text() + gradient(meta))
    return {p.name: p.stat().st_size for p in sorted(out.iterdir())}


if __name__ == "__main__":
    sizes = build_assets(Path(sys.argv[1]))
    for name, size in sizes.items():
        print(f"{size / 1e6:8.2f} MB  {name}")
    print(f"{sum(sizes.values()) / 1e6:8.2f} MB  in all")
