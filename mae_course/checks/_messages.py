"""What the checks say, in the lesson's language: every message by its id, in English and in Chinese.

English is the source. Each check module defines its messages, id -> text with format fields,
in a ``MESSAGES`` dict given to :func:`define`::

    MESSAGES = define({"random_masking.inverted": "random_masking: the mask is 1 for kept tokens; ..."})
    raise fail("random_masking.inverted")

The Chinese lives beside them in ``zh.md``, in the blocks of the lessons' translations
(scripts/translations.py): each id with the hash of the English text it translates,

    <!-- random_masking.inverted sha256:1a2b3c4d5e6f7a8b -->
    random_masking：掩码在保留的标记处为 1；……

When an English message changes, its hash no longer matches and the check says it in English
(never a stale translation as if it were current) until it is translated again;
``problems("zh")`` lists what is missing or stale, and the tests fail on it.

The language is the lesson's: the Chinese lessons set ``MAE_COURSE_LANG=zh`` in their first cell;
:func:`use_language` sets it from Python. Without either, the checks speak English.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import string
from importlib import resources
from typing import Any, NamedTuple

from ..errors import ConfigError

LANGUAGES = ("en", "zh")
ENV = "MAE_COURSE_LANG"  # the lesson's language; the Chinese lessons set it in their first cell
_BLOCK = re.compile(r"^<!-- (\S+) sha256:([0-9a-f]{16}) -->\n", re.MULTILINE)
_ENGLISH: dict[str, str] = {}
_chosen: str | None = None


def define(messages: dict[str, str]) -> dict[str, str]:
    """Add a check module's English messages to the catalogue; an id may be defined only once."""
    for key, text in messages.items():
        if _ENGLISH.get(key, text) != text:
            raise ValueError(f"check message {key} is defined twice")
    _ENGLISH.update(messages)
    return messages


def english() -> dict[str, str]:
    """Every message id -> its English text (importing every check module defines them all)."""
    from .. import checks  # noqa: F401  (the package imports each check module)

    return dict(_ENGLISH)


def source_hash(text: str) -> str:
    """The first 16 hex digits of the SHA-256 of the English text: the lessons' translations use the same."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_language(lang: str, where: str) -> str:
    if lang not in LANGUAGES:
        raise ConfigError(f"{where} is {lang!r}; the checks speak {' or '.join(LANGUAGES)}")
    return lang


def use_language(lang: str | None) -> None:
    """Speak ``lang`` ("en" or "zh") from now on; None: back to the environment's ``MAE_COURSE_LANG``."""
    global _chosen
    _chosen = None if lang is None else _check_language(lang, "the language")


def language() -> str:
    """The language the checks speak now: :func:`use_language`'s, else ``MAE_COURSE_LANG``'s, else English."""
    if _chosen is not None:
        return _chosen
    return _check_language(os.environ.get(ENV) or "en", ENV)


class Translation(NamedTuple):
    sha: str  # the hash of the English it was made from
    text: str


@functools.cache
def translations(lang: str) -> dict[str, Translation]:
    """id -> its translation into ``lang``, from ``<lang>.md`` beside this module."""
    text = (resources.files(__package__) / f"{lang}.md").read_text(encoding="utf-8")
    parts = _BLOCK.split(text)  # [preamble, id, sha, text, id, sha, text, ...]
    found: dict[str, Translation] = {}
    for i in range(1, len(parts), 3):
        if parts[i] in found:
            raise ValueError(f"mae_course/checks/{lang}.md translates {parts[i]} twice")
        found[parts[i]] = Translation(parts[i + 1], parts[i + 2].strip("\n"))
    return found


def template(key: str, lang: str) -> str:
    """The text of message ``key`` in ``lang``; the English where its translation is missing or stale."""
    source = english()[key]
    if lang == "en":
        return source
    done = translations(lang).get(key)
    return done.text if done is not None and done.sha == source_hash(source) else source


def say(key: str, lang: str | None = None, **fields: Any) -> str:
    """Message ``key`` with its fields filled in, in ``lang`` (default: the lesson's language)."""
    return template(key, lang or language()).format(**fields)


def fields(text: str) -> set[str]:
    """The names of a message's format fields."""
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(text) if name}


def problems(lang: str) -> list[str]:
    """Messages of ``lang`` that are missing, stale, unknown, untranslated or have other fields than the English."""
    where = f"mae_course/checks/{lang}.md"
    source, done = english(), translations(lang)
    found = []
    for key, text in source.items():
        block = done.get(key)
        if block is None:
            found.append(f"{where}: message {key} has no translation")
        elif block.sha != source_hash(text):
            found.append(
                f"{where}: message {key} is stale: its English changed since it was translated "
                f"(sha256:{block.sha}, now sha256:{source_hash(text)}); translate it again and update the hash"
            )
        elif block.text.strip() == text.strip() and re.search("[A-Za-z]{3,}", re.sub(r"\{[^}]*\}|`[^`]*`", "", text)):
            found.append(f"{where}: message {key} is still the English text")
        elif fields(block.text) != fields(text):
            found.append(
                f"{where}: message {key} has the fields {sorted(fields(block.text))}, "
                f"the English {sorted(fields(text))}"
            )
    found += [f"{where}: message {key} is not a message of the checks (removed?)" for key in done if key not in source]
    return found


def skeleton(lang: str) -> str:
    """The blocks of every message ``lang`` lacks, in English with their hashes, to translate."""
    done = translations(lang)
    return "".join(
        f"\n<!-- {key} sha256:{source_hash(text)} -->\n{text}\n" for key, text in english().items() if key not in done
    )
