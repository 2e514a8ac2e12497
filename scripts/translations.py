"""The lessons in other languages: one program, two narrations.

    python scripts/translations.py status            # every missing or stale translated cell
    python scripts/translations.py skeleton 06       # append the missing cells of lesson 06, in English, to translate
    python scripts/translations.py glossary 06       # where lesson 06 breaks the gloss rule

The English solutions are the single source. A translation is data beside them,
``translations/<lang>/NN_name.md``: each markdown cell of the lesson, by its cell id, with the
hash of the English text it translates, in blocks like

    <!-- l06-04 sha256:1a2b3c4d5e6f7a8b -->
    ## 模型
    ...

and, for a code cell with exercise hints, a block of its ``# hint:`` lines' text, one per line
(the hash is of the English hint lines).

``make lessons`` (scripts/make_exercises.py) builds ``solutions/<lang>/`` and ``notebooks/<lang>/``
from them: the English notebook with its markdown cells replaced and outputs copied from the
English solution. One program, two narrations: the code cells are byte for byte the English ones
except for two things, the text of their ``# hint:`` comments, translated, and the language of the
checks, one line of the first code cell (``LANGUAGE_SETTING``, with the ``import os`` it needs); the
checks' verdicts in the stored outputs are the edition's (``mae_course.checks.verdicts``).
``program`` is that rule, and ``tests/test_translations.py`` enforces it.

When an English cell changes, its hash no longer matches: the built lesson shows that cell in
English (under a warning, for prose), ``status`` lists it, and ``tests/test_translations.py``
fails until the translation is updated (new text, new hash). The checks' own messages are
translated the same way, in ``mae_course/checks/<lang>.md``; ``status`` lists them too.
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

from mae_course.checks import messages as check_messages
from mae_course.checks import verdicts

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS, TRANSLATIONS = ROOT / "solutions", ROOT / "translations"
LANGUAGES = {"zh": "中文"}
HEADER_TAG = "course-header"  # the Colab badge and install cells that make_exercises writes: never translated
_BLOCK = re.compile(r"^<!-- (\S+) sha256:([0-9a-f]{16}) -->\n", re.MULTILINE)
# An exercise hint: "# hint:" in a solution, "# Hint:" or an edition's word in a stub (make_exercises.HINT_LABEL).
_HINT = re.compile(r"^(\s*# (?:hint:|提示：)[ \t]*)(.*)$", re.MULTILINE | re.IGNORECASE)
# The one line of code an edition adds (to its first code cell, with the import it needs): the checks' language.
LANGUAGE_SETTING = 'os.environ["MAE_COURSE_LANG"] = "{lang}"  # the language of the exercise checks'
IMPORT_OS = "import os"
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


def hints(source: str) -> list[str]:
    """The text of a code cell's ``# hint:`` comments, in order."""
    return [m.group(2).rstrip() for m in _HINT.finditer(source)]


def english_text(cell) -> str:
    """What a translation of ``cell`` translates: a markdown cell's source, a code cell's hint lines."""
    return "\n".join(hints(cell.source)) if cell.cell_type == "code" else cell.source


def translatable(nb) -> list:
    """The cells a translation covers, in order: the markdown cells (all but the generated header)
    and the code cells with exercise hints."""
    return [
        c
        for c in nb.cells
        if HEADER_TAG not in c.metadata.get("tags", [])
        and (c.cell_type == "markdown" or (c.cell_type == "code" and hints(c.source)))
    ]


def with_hints(source: str, translated_hints: list[str]) -> str:
    """``source`` with the text of its ``# hint:`` comments replaced, one for one."""
    lines = iter(translated_hints)
    return _HINT.sub(lambda m: m.group(1) + next(lines), source)


def program(source: str, lang: str = "") -> str:
    """A code cell as the rule of one program sees it: each hint comment reduced to its place (its
    word and text are the edition's), and an edition's language setting, with its ``import os``, taken away."""
    code = _HINT.sub(lambda m: m.group(1)[: len(m.group(1)) - len(m.group(1).lstrip())] + "# hint:", source)
    setting = f"{LANGUAGE_SETTING.format(lang=lang)}\n"
    if lang and setting in code:
        code = code.replace(setting, "", 1).replace(f"{IMPORT_OS}\n", "", 1)
    return code


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
_HAN, _FULL_WIDTH = "[\u4e00-\u9fff]", "[\u3000-\u303f\uff00-\uffef]"  # Chinese characters; full-width punctuation
_STRAY_SPACE = re.compile(f"{_HAN}[ \t]+(?:{_HAN}|{_FULL_WIDTH})|{_FULL_WIDTH}[ \t]+{_HAN}")
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


def stray_spaces(text: str) -> list[str]:
    """Spaces between two Chinese characters, or between one and full-width punctuation (outside
    code): Chinese is written without them (a space belongs only next to Latin letters and digits)."""
    prose = re.sub(r"```.*?```|`[^`\n]*`", "C", text, flags=re.S)  # code reads as Latin letters
    return [prose[max(0, m.start() - 4) : m.end() + 4] for m in _STRAY_SPACE.finditer(prose)]


def problems(lang: str, path: Path) -> list[str]:
    """What is missing, stale or left over in the translation of one English solution."""
    nb = read_notebook(path)
    where = translation_path(lang, path.stem).relative_to(ROOT)
    blocks = read_translation(translation_path(lang, path.stem))
    found = []
    for cell in translatable(nb):
        block, english = blocks.get(cell.id), english_text(cell)
        if block is None:
            found.append(f"{where}: cell {cell.id} has no translation")
        elif block.sha != source_hash(english):
            found.append(
                f"{where}: cell {cell.id} is stale: its English changed since it was translated "
                f"(sha256:{block.sha}, now sha256:{source_hash(english)}); translate it again and update the hash"
            )
        elif not block.text.strip():
            found.append(f"{where}: cell {cell.id} is empty")
        elif block.text.strip() == english.strip() and has_prose(english):
            found.append(f"{where}: cell {cell.id} is still the English text")
        elif cell.cell_type == "code" and len(block.text.split("\n")) != len(hints(cell.source)):
            found.append(
                f"{where}: cell {cell.id} has {len(hints(cell.source))} hint lines, its translation "
                f"{len(block.text.splitlines())}: translate them one for one"
            )
        elif cell.cell_type == "markdown" and (broken := soft_breaks(block.text)):
            found.append(
                f"{where}: cell {cell.id} breaks a line between two Chinese characters, which renders "
                f"as a space: join {broken[0]!r}"
            )
        elif spaced := stray_spaces(block.text):
            found.append(f"{where}: cell {cell.id} has a space between Chinese characters: {spaced[0]!r}")
    ids = {c.id for c in translatable(nb)}
    found += [
        f"{where}: cell {i} is not a markdown cell or a cell with hints of {path.name} (removed?)"
        for i in blocks
        if i not in ids
    ]
    return found


def message_problems(lang: str) -> list[str]:
    """What is missing, stale or badly spaced in the translation of the checks' messages."""
    found = check_messages.problems(lang)
    for key, done in check_messages.translations(lang).items():
        if spaced := stray_spaces(done.text):
            found.append(
                f"mae_course/checks/{lang}.md: message {key} has a space between Chinese characters: {spaced[0]!r}"
            )
    return found


def translated(solution, lang: str, stem: str):
    """The notebook with its markdown and hints in ``lang``, and the checks' verdicts of its outputs;
    a cell without a current translation stays English, prose under a visible warning (never a
    stale translation shown as current)."""
    nb = copy.deepcopy(solution)
    blocks = read_translation(translation_path(lang, stem))
    for cell in translatable(nb):
        block = blocks.get(cell.id)
        current = block is not None and block.sha == source_hash(english_text(cell)) and block.text.strip()
        if cell.cell_type == "code":
            if current and len(block.text.split("\n")) == len(hints(cell.source)):
                cell.source = with_hints(cell.source, block.text.split("\n"))
        elif current:
            cell.source = block.text
        else:
            cell.source = UNTRANSLATED[lang] + cell.source
    said = verdicts(lang)
    for cell in nb.cells:
        for output in cell.get("outputs", []) if "check" in cell.metadata.get("tags", []) else []:
            if output.get("output_type") == "stream":
                output.text = "".join(
                    said.get(line.rstrip("\n"), line.rstrip("\n")) + line[len(line.rstrip("\n")) :]
                    for line in output.text.splitlines(keepends=True)
                )
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
        text += f"\n<!-- {cell.id} sha256:{source_hash(english_text(cell))} -->\n{english_text(cell)}\n"
    out.write_text(text)
    return len(missing)


# ---- the glossary: English -> term, and the first-use rule


def glossary(lang: str) -> dict[str, str]:
    """English term -> the edition's term, from the table in translations/<lang>/glossary.md."""
    rows = re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", read_text(TRANSLATIONS / lang / "glossary.md"), re.M)
    return {en: term for en, term in rows if en != "English" and not set(en) <= {"-"}}


def lesson_prose(lang: str, stem: str) -> str:
    """A lesson's translated prose, its markdown blocks in the lesson's order (code and link targets blanked)."""
    blocks = read_translation(translation_path(lang, stem))
    english = SOLUTIONS / f"{stem}.ipynb"
    if english.exists():  # in the lesson's order, whatever the file's order; the hints are code, not prose
        cells = {c.id: c for c in translatable(read_notebook(english))}
        order = list(cells)
        blocks = {
            i: blocks[i]
            for i in sorted(blocks, key=lambda i: order.index(i) if i in order else len(order))
            if i not in cells or cells[i].cell_type == "markdown"
        }
    text = "\n".join(b.text for b in blocks.values())
    return re.sub(r"```.*?```|`[^`\n]*`|\]\([^)]*\)", lambda m: re.sub(r"[^\n]", " ", m.group()), text, flags=re.S)


def _parenthesis_depth(text: str) -> list[int]:
    """For each character of ``text``, how many parentheses (half- or full-width) are open around it."""
    depth, depths = 0, []
    for char in text:
        if char in ")）":
            depth = max(0, depth - 1)
        depths.append(depth)
        if char in "(（":
            depth += 1
    return depths


def first_use_problems(lang: str) -> list[str]:
    """Where the course breaks the gloss rule: a glossary term is glossed, ``术语（english）``, once in
    the course, at its first use outside headings and parentheses, with the English in the singular
    (and in the glossary); never again, never in a heading, never inside another parenthesis.

    An occurrence inside a longer glossary term (编码器 in 掩码自编码器) does not count.
    """
    stems = [p.stem for p in sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb"))]
    texts = {stem: lesson_prose(lang, stem) for stem in stems}
    terms = glossary(lang)
    found = []
    for english, term in terms.items():
        longer = [t for t in terms.values() if term in t and t != term]
        gloss = re.compile(rf"[*_]*[（(]\s*{re.escape(english)}(e?s)?\s*([)）]|[,，;；])", re.IGNORECASE)
        first = None  # (stem, whether glossed) of the first use that may carry the gloss
        for stem, text in texts.items():
            hidden = text
            for other in longer:
                hidden = hidden.replace(other, "\0" * len(other))
            depths = _parenthesis_depth(hidden)
            for match in re.finditer(re.escape(term), hidden):
                at = match.end()
                glossed = gloss.match(hidden, at)
                line = hidden[hidden.rfind("\n", 0, match.start()) + 1 :]
                where = (
                    "in a heading" if line.startswith("#") else "inside parentheses" if depths[match.start()] else ""
                )
                if glossed and glossed.group(1):
                    found.append(f"{stem}: the gloss of {term} is plural; write {term}（{english}）")
                if where:
                    if glossed:
                        found.append(f"{stem}: {term} is glossed {where}; gloss it at its first use in the text")
                    continue
                if first is None:
                    first = stem
                    if not glossed:
                        after = hidden[at : at + len(english) + 8]
                        found.append(
                            f"{stem}: first use of {term} in the course should read {term}（{english}）, "
                            f"found {term}{after[:12]!r}"
                        )
                elif glossed:
                    found.append(f"{stem}: {term} is glossed again (first used in {first}); gloss only its first use")
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
    found = message_problems(args.lang) if args.command == "status" and not args.lessons else []
    for path in paths:
        if args.command == "status":
            found += problems(args.lang, path)
        elif args.command == "glossary":
            found += [p for p in first_use_problems(args.lang) if p.startswith(f"{path.stem}:")]
        else:
            print(f"{path.stem}: {skeleton(args.lang, path)} cells added to {translation_path(args.lang, path.stem)}")
    print("\n".join(found) or "all good")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
