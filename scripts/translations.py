"""The lessons in other languages: one program, two narrations.

    python scripts/translations.py status            # every missing or stale translated cell
    python scripts/translations.py skeleton 06       # append the missing cells of lesson 06, in English, to translate
    python scripts/translations.py glossary 06       # where lesson 06 breaks the glossary's first-use rule

The English solutions are the single source. A translation is data beside them,
``translations/<lang>/NN_name.md``: each markdown cell of the lesson, by its cell id, with the
hash of the English text it translates, in blocks like

    <!-- l06-04 sha256:1a2b3c4d5e6f7a8b -->
    ## 模型
    ...

``make lessons`` (scripts/make_exercises.py) builds ``solutions/<lang>/`` and ``notebooks/<lang>/``
from them: the English notebook with its markdown cells replaced, code cells byte for byte the
same, outputs copied from the English solution. When an English cell changes, its hash no longer
matches: the built lesson shows that cell in English under a warning, ``status`` lists it, and
``tests/test_translations.py`` fails until the translation is updated (new text, new hash).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS, TRANSLATIONS = ROOT / "solutions", ROOT / "translations"
LANGUAGES = {"zh": "中文"}
HEADER_TAG = "course-header"  # the Colab badge and install cells that make_exercises writes: never translated
_BLOCK = re.compile(r"^<!-- (\S+) sha256:([0-9a-f]{16}) -->\n", re.MULTILINE)
UNTRANSLATED = {
    "zh": "> ⚠️ 此单元尚未翻译，或其英文原文已更新；下面是英文原文。(This cell is not translated yet, or its English changed.)\n\n"
}


def shown(path: Path) -> str:
    """``path`` as the messages show it: relative to the repository when it is inside."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def read_text(path: Path) -> str:
    """A UTF-8 file's text; a byte that is not UTF-8 stops the tool with one line naming the place."""
    data = path.read_bytes()
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise SystemExit(
            f"{shown(path)} is not UTF-8: byte 0x{data[e.start]:02x} at line {line}, column {column}"
        ) from None


def read_notebook(path: Path):
    return nbformat.reads(read_text(path), as_version=4)


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")


def unclosed_fence(markdown: str) -> int | None:
    """The index of the line that opens a code fence (``` or ~~~) the text never closes, or None."""
    opened = None
    for i, line in enumerate(markdown.split("\n")):
        fence = _FENCE.match(line)
        if fence is None:
            continue
        if opened is None:
            opened = (i, fence.group(1))
        elif fence.group(1)[0] == opened[1][0] and len(fence.group(1)) >= len(opened[1]) and not fence.group(2).strip():
            opened = None
    return opened[0] if opened else None


def source_hash(text: str) -> str:
    """The first 16 hex digits of the SHA-256 of a cell's English source."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def translatable(nb) -> list:
    """The markdown cells a translation covers, in order (all but the generated header)."""
    return [c for c in nb.cells if c.cell_type == "markdown" and HEADER_TAG not in c.metadata.get("tags", [])]


@dataclass
class Block:
    sha: str
    text: str


def translation_path(lang: str, stem: str) -> Path:
    return TRANSLATIONS / lang / f"{stem}.md"


def read_translation(path: Path) -> dict[str, Block]:
    """Cell id -> its translated block; an empty dict if there is no file yet."""
    if not path.exists():
        return {}
    text = read_text(path)
    heads = list(_BLOCK.finditer(text))
    blocks: dict[str, Block] = {}
    for head, after in zip(heads, [*heads[1:], None], strict=True):
        cell_id, sha = head.groups()
        body = text[head.end() : after.start() if after else len(text)]
        if cell_id in blocks:
            raise SystemExit(f"{shown(path)}: cell {cell_id} is translated twice")
        if (at := unclosed_fence(body)) is not None:  # the rest of the cell would render as code
            line = text.count("\n", 0, head.end()) + at + 1
            raise SystemExit(
                f"{shown(path)}: cell {cell_id} opens a code fence (```) at line {line} and never closes it"
            )
        blocks[cell_id] = Block(sha, body.strip("\n"))
    return blocks


def has_prose(markdown: str) -> bool:
    """Whether a markdown cell has words to translate (outside code, math, links' targets, HTML tags)."""
    text = re.sub(r"```.*?```|`[^`]*`|\$[^$]*\$|\]\([^)]*\)|<[^>]+>", " ", markdown, flags=re.S)
    return re.search(r"[A-Za-z]{3,}", text) is not None


_CJK = "[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]"
_NEW_BLOCK = re.compile(r"\s*([-*+] |\d+\. |#|\||>|<|\$\$|$)")  # a line that starts a list item, heading, ...


def soft_breaks(markdown: str) -> list[str]:
    """Places where a paragraph's line ends and the next begins with a Chinese character (outside code)."""
    found, fence, lines = [], False, markdown.split("\n")
    for before, line in zip(lines, lines[1:], strict=False):
        if before.strip().startswith("```"):
            fence = not fence
        joined = re.search(_CJK + "$", before.rstrip("*_")) and re.match(_CJK, line.lstrip("*_"))  # **bold** too
        if not fence and joined and not _NEW_BLOCK.match(line):
            found.append(before[-6:] + "⏎" + line[:6])
    return found


def problems(lang: str, path: Path) -> list[str]:
    """What is missing, stale or left over in the translation of one English solution."""
    nb = read_notebook(path)
    where = translation_path(lang, path.stem).relative_to(ROOT)
    blocks = read_translation(translation_path(lang, path.stem))
    found = []
    for cell in translatable(nb):
        block = blocks.get(cell.id)
        if block is None:
            found.append(f"{where}: cell {cell.id} has no translation")
        elif block.sha != source_hash(cell.source):
            found.append(
                f"{where}: cell {cell.id} is stale: its English changed since it was translated "
                f"(sha256:{block.sha}, now sha256:{source_hash(cell.source)}); translate it again and update the hash"
            )
        elif not block.text.strip():
            found.append(f"{where}: cell {cell.id} is empty")
        elif block.text.strip() == cell.source.strip() and has_prose(cell.source):
            found.append(f"{where}: cell {cell.id} is still the English text")
        elif broken := soft_breaks(block.text):
            found.append(f"{where}: cell {cell.id} breaks a line between two Chinese characters, which renders "
                         f"as a space: join {broken[0]!r}")  # fmt: skip
    ids = {c.id for c in translatable(nb)}
    found += [f"{where}: cell {i} is not a markdown cell of {path.name} (removed?)" for i in blocks if i not in ids]
    return found


def translated(solution, lang: str, stem: str):
    """The notebook with its markdown in ``lang``; a cell without a current translation stays
    English under a visible warning (never a stale translation shown as current)."""
    nb = copy.deepcopy(solution)
    blocks = read_translation(translation_path(lang, stem))
    for cell in translatable(nb):
        block = blocks.get(cell.id)
        if block is not None and block.sha == source_hash(cell.source) and block.text.strip():
            cell.source = block.text
        else:
            cell.source = UNTRANSLATED[lang] + cell.source
    nb.metadata["language_edition"] = lang
    return nb


def skeleton(lang: str, path: Path) -> int:
    """Append every untranslated cell of ``path``, in English with its hash, to its translation file."""
    nb = read_notebook(path)
    out = translation_path(lang, path.stem)
    blocks = read_translation(out)
    missing = [c for c in translatable(nb) if c.id not in blocks]
    if not missing:
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    text = read_text(out) if out.exists() else f"<!-- {LANGUAGES[lang]}: solutions/{path.name} -->\n"
    for cell in missing:
        text += f"\n<!-- {cell.id} sha256:{source_hash(cell.source)} -->\n{cell.source}\n"
    out.write_text(text)
    return len(missing)


# ---- the glossary: English -> term, and the first-use rule


def glossary(lang: str) -> dict[str, str]:
    """English term -> the edition's term, from the table in translations/<lang>/glossary.md."""
    rows = re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", read_text(TRANSLATIONS / lang / "glossary.md"), re.M)
    return {en: term for en, term in rows if en != "English" and not set(en) <= {"-"}}


def first_use_problems(lang: str, stem: str) -> list[str]:
    """Terms whose first use in the lesson is not followed by its English in parentheses.

    An occurrence inside a longer glossary term (编码器 in 掩码自编码器) does not count.
    """
    blocks = read_translation(translation_path(lang, stem))
    english = SOLUTIONS / f"{stem}.ipynb"
    if english.exists():  # in the lesson's order, whatever the file's order
        order = [c.id for c in translatable(read_notebook(english))]
        blocks = {i: blocks[i] for i in sorted(blocks, key=lambda i: order.index(i) if i in order else len(order))}
    text = "\n".join(b.text for b in blocks.values())
    text = re.sub(r"`[^`\n]*`|\]\([^)]*\)", lambda m: " " * len(m.group()), text)  # code and link targets
    terms = glossary(lang)
    found = []
    for english, term in terms.items():
        hidden = text
        for longer in (t for t in terms.values() if term in t and t != term):
            hidden = hidden.replace(longer, "\0" * len(longer))
        at = hidden.find(term)
        if at < 0:
            continue
        after = hidden[at + len(term) : at + len(term) + len(english) + 8].lstrip("*_")
        if not re.match(rf"[（(]\s*{re.escape(english)}(e?s)?\s*([)）]|[,，;；])", after, re.IGNORECASE):
            found.append(f"{stem}: first use of {term} should read {term}（{english}）, found {term}{after[:12]!r}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["status", "skeleton", "glossary"])
    parser.add_argument("lessons", nargs="*", help="lesson numbers (default: all)")
    parser.add_argument("--lang", default="zh", choices=sorted(LANGUAGES))
    args = parser.parse_args(argv)
    paths = sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb"))
    if args.lessons:
        paths = [p for p in paths if p.name[:2] in args.lessons]
    found = []
    for path in paths:
        if args.command == "status":
            found += problems(args.lang, path)
        elif args.command == "glossary":
            found += first_use_problems(args.lang, path.stem)
        else:
            print(f"{path.stem}: {skeleton(args.lang, path)} cells added to {translation_path(args.lang, path.stem)}")
    print("\n".join(found) or "all good")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
