"""How a check runs and speaks: one line for success, a specific message for a mistake,
and a plain "not implemented" for an exercise that has not been written yet."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch


class CheckFailed(AssertionError):
    """The learner's function gave a wrong result. The message says what is wrong and,
    where it can, how to see it for yourself."""

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of printing a traceback: show the verdict, not our internals.
        return [f"\x1b[31m✗ {self}\x1b[0m"]


def not_implemented_message(name: str) -> str:
    """What a check prints for an exercise that still raises NotImplementedError."""
    return (
        f"… {name}: not implemented yet. Write it in the cell above, run that cell, then run this check again. "
        "(The lesson goes on with the reference implementation.)"
    )


def exercise(name: str, what: str) -> Callable:
    """Turn a checking function into ``check_<name>(fn)``.

    The decorated body receives the learner's function and raises :class:`CheckFailed` on
    the first mistake; ``what`` describes what was checked, for the success line.
    """

    def decorate(body: Callable[[Callable], None]) -> Callable[[Callable], None]:
        @functools.wraps(body)
        def check(fn: Callable) -> None:
            if not callable(fn):
                raise CheckFailed(f"{name}: expected a function, got {type(fn).__name__}")
            try:
                body(fn)
            except NotImplementedError:
                print(not_implemented_message(name))
                return
            print(f"✓ {name} is correct ({what}).")

        check.__doc__ = f"Check your ``{name}`` against the reference: {what}."
        check.exercise_name = name
        return check

    return decorate


def call(name: str, fn: Callable, *args: Any, case: str = "", **kwargs: Any) -> Any:
    """Call the learner's function; any error other than NotImplementedError becomes a
    CheckFailed that names the case it happened in."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except CheckFailed:
        raise
    except Exception as e:  # the learner's code crashed: say where, and what it said
        where = f" on {case}" if case else ""
        raise CheckFailed(f"{name} raised {type(e).__name__}{where}: {e}") from None


def expect_tensor(name: str, value: Any, what: str = "a tensor") -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise CheckFailed(f"{name} should return {what}, but returned {type(value).__name__}")
    return value


def expect_shape(name: str, value: torch.Tensor, shape: tuple[int, ...], hint: str = "") -> None:
    if tuple(value.shape) != tuple(shape):
        extra = f"; {hint}" if hint else ""
        raise CheckFailed(f"{name}: expected shape {tuple(shape)}, got {tuple(value.shape)}{extra}")


def same(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Equal shapes and values (within float tolerance)."""
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=atol, rtol=rtol)
