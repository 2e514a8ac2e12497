"""How a check runs and speaks: one line for success, a specific message for a mistake,
and a plain "not implemented" for an exercise that has not been written yet, each in the lesson's
language (:mod:`._messages`; a message is raised by its id: ``raise fail("patchify.in_place")``).

"Not written yet" is the stub's own marker, ``NotImplementedError(STUB_MARKER)``, and nothing else:
PyTorch raises NotImplementedError for ordinary mistakes too (``1 - mask`` on a bool mask, calling an
``nn.ModuleList``), and those are failures, with what was raised and the line it came from.
"""

from __future__ import annotations

import functools
import os
import site
import sysconfig
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ._messages import define, say

STUB_MARKER = "your code here"  # every exercise stub raises NotImplementedError(STUB_MARKER): scripts/make_exercises.py


MESSAGES = define(
    {
        "check.passed": "✓ {name} is correct ({what}).",
        "check.not_implemented": "… {name}: not implemented yet. Write it in the cell above, run that cell, then run "
        "this check again. (The lesson goes on with the reference implementation.)",
        "check.not_a_function": "{name}: expected a function, got {kind}",
        "check.broke_the_check": "{name}: {error} while checking it, {origin}{said}",
        "check.raised": "{name} raised {error}, {origin}{said}",
        "check.raised_on": "{name} raised {error} on {case}, {origin}{said}",
        "check.refused_otherwise": "{crash}; {instead}",
        "check.said": ": {text}",
        "check.in_line": "in `{line}` (line {lineno} of {function})",
        "check.at_line": "at line {lineno} of {function}",
        "check.in_library": "in {path}, line {lineno}",
        "check.somewhere": "somewhere",
        "check.not_a_tensor": "{name} should return {what}, but returned {kind}",
        "check.a_tensor": "a tensor",
        "check.wrong_shape": "{name}: expected shape {expected}, got {got}",
        "check.wrong_shape_hint": "{name}: expected shape {expected}, got {got}; {hint}",
    }
)
EXERCISES: list[str] = []  # the names of the exercises, in the order their checks are defined


def fail(key: str, **fields: Any) -> CheckFailed:
    """The failure of message ``key`` (an id of a ``MESSAGES`` dict), in the lesson's language: ``raise fail(...)``."""
    return CheckFailed(say(key, **fields))


def passed(name: str, lang: str | None = None) -> str:
    """The line a check prints when exercise ``name`` is right."""
    return say("check.passed", lang, name=name, what=say(f"{name}.checked", lang))


def verdicts(lang: str) -> dict[str, str]:
    """Every exercise's English success line -> the same line in ``lang`` (for the stored outputs of a translation)."""
    return {passed(name, "en"): passed(name, lang) for name in EXERCISES}


class CheckFailed(AssertionError):
    """The learner's function gave a wrong result. The message says what is wrong and,
    where it can, how to see it for yourself."""

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of printing a traceback: show the verdict, not our internals.
        return [f"\x1b[31m✗ {self}\x1b[0m"]


def is_stub(error: BaseException) -> bool:
    """Whether ``error`` is an unwritten exercise's marker (not any NotImplementedError)."""
    return isinstance(error, NotImplementedError) and error.args == (STUB_MARKER,)


def not_implemented_message(name: str) -> str:
    """What a check prints for an exercise that still raises the stub's NotImplementedError."""
    return say("check.not_implemented", name=name)


def _library_roots() -> list[tuple[str, str]]:
    """(folder, how its files are shown) for code that is not the learner's: this package, the
    standard library, installed packages. Longest first, so that site-packages wins over the
    standard library folder that holds it."""
    paths = sysconfig.get_paths()
    installed = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    installed |= set(getattr(site, "getsitepackages", list)()) | {site.getusersitepackages()}
    roots = [(os.path.realpath(folder), "") for folder in installed]
    roots.append((os.path.realpath(Path(__file__).parents[1]), "mae_course/"))
    return sorted(((folder + os.sep, shown) for folder, shown in roots), key=lambda root: -len(root[0]))


_LIBRARIES = _library_roots()


def _library_path(filename: str) -> str | None:
    """A library file's path from its library ('torch/nn/modules/module.py'); None for the learner's code."""
    if filename.startswith("<frozen"):
        return filename
    path = os.path.realpath(filename)
    for folder, shown in _LIBRARIES:
        if path.startswith(folder):
            return shown + path[len(folder) :]
    return None


def origin(error: BaseException) -> str:
    """Where ``error`` came from: the last line of the learner's own code it went through, else the
    line that raised it."""
    frames = traceback.extract_tb(error.__traceback__)
    own = [frame for frame in frames if _library_path(frame.filename) is None]
    if own:
        frame = own[-1]
        at = dict(lineno=frame.lineno, function=frame.name)
        return say("check.in_line", line=frame.line, **at) if frame.line else say("check.at_line", **at)
    if frames:
        return say("check.in_library", path=_library_path(frames[-1].filename), lineno=frames[-1].lineno)
    return say("check.somewhere")


def _said(error: BaseException) -> str:
    text = " ".join(str(error).split())  # one line, however the library wrapped its message
    return say("check.said", text=text) if text else ""


def crash_message(name: str, error: BaseException, case: str = "") -> str:
    """What a check says when the learner's function raised ``error``: its type, its message and its line."""
    said = dict(name=name, error=type(error).__name__, origin=origin(error), said=_said(error))
    return say("check.raised_on", case=case, **said) if case else say("check.raised", **said)


def exercise(name: str) -> Callable:
    """Turn a checking function into ``check_<name>(fn)``.

    The decorated body receives the learner's function and raises :class:`CheckFailed` on
    the first mistake; the message ``<name>.checked`` says what was checked, for the success line.
    """
    EXERCISES.append(name)

    def decorate(body: Callable[[Callable], None]) -> Callable[[Callable], None]:
        @functools.wraps(body)
        def check(fn: Callable) -> None:
            if not callable(fn):
                raise fail("check.not_a_function", name=name, kind=type(fn).__name__)
            try:
                body(fn)
            except CheckFailed:
                raise
            except Exception as error:
                if not is_stub(error):  # not through call(): something the learner returned broke the check
                    raise fail(
                        "check.broke_the_check",
                        name=name,
                        error=type(error).__name__,
                        origin=origin(error),
                        said=_said(error),
                    ) from None
                print(not_implemented_message(name))
                return
            print(passed(name))

        check.__doc__ = f"Check your ``{name}`` against the reference: {say(f'{name}.checked', 'en')}."
        check.exercise_name = name
        return check

    return decorate


def call(name: str, fn: Callable, *args: Any, case: str = "", **kwargs: Any) -> Any:
    """Call the learner's function; any error but the stub's marker becomes a CheckFailed that
    names the case it happened in, the error's message and the line it came from."""
    try:
        return fn(*args, **kwargs)
    except CheckFailed:
        raise
    except Exception as error:
        if is_stub(error):
            raise
        raise CheckFailed(crash_message(name, error, case)) from None


def refused(name: str, fn: Callable, *args: Any, case: str, instead: str) -> tuple[bool, Any]:
    """Call the learner's function on an input it must refuse: (True, None) if it raised ValueError,
    (False, what it returned) if it returned. Any other error fails, saying ``instead`` (what to raise)."""
    try:
        return False, fn(*args)
    except ValueError:
        return True, None
    except Exception as error:
        if is_stub(error):
            raise
        raise fail("check.refused_otherwise", crash=crash_message(name, error, case), instead=instead) from None


def expect_tensor(name: str, value: Any, what: str = "check.a_tensor") -> torch.Tensor:
    """``value`` if it is a tensor; else fail saying what was expected (message ``what``)."""
    if not isinstance(value, torch.Tensor):
        raise fail("check.not_a_tensor", name=name, what=say(what), kind=type(value).__name__)
    return value


def expect_shape(name: str, value: torch.Tensor, shape: tuple[int, ...], hint: str = "") -> None:
    """Fail unless ``value`` has ``shape``; ``hint`` (already in the lesson's language) says what the shape holds."""
    if tuple(value.shape) != tuple(shape):
        shapes = dict(name=name, expected=tuple(shape), got=tuple(value.shape))
        raise fail("check.wrong_shape_hint", hint=hint, **shapes) if hint else fail("check.wrong_shape", **shapes)


def same(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Equal shapes and values (within float tolerance)."""
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=atol, rtol=rtol)
