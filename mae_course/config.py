"""Settings: every job's options as dataclass fields, each defined once with its help text.

    @dataclass
    class PretrainConfig(RunOptions, OptimOptions, DataOptions):
        mask_ratio: float = option(0.75, "fraction of patches removed", group="model")

A field made by :func:`option` carries its help and how it looks on the command line; the
command line is generated from these fields (:func:`add_options`, :func:`from_args`, used by
:mod:`mae_course.cli`), and :func:`from_mapping` checks settings given as JSON
(``sweep --pretrain '{"epochs": 20}'``) against them: unknown keys, wrong types and non-finite
numbers are one-line errors that name the setting. Ranges are each job's own ``validate()``.

The options that several jobs share are defined here once: :class:`DataOptions`,
:class:`OptimOptions`, :class:`RunOptions`. A job that wants another default redeclares the
field with a plain default; its help is found on the parent.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any

from .errors import ConfigError

BUILTIN = "builtin"
MAX_IMAGE_SIZE = 4096  # pixels a side: beyond any dataset of the course (ImageNet fine-tuning goes to 448)
MAX_SEED = 2**32 - 1  # seeds are 32-bit numbers (the derived per-epoch seeds stay within torch's 64 bits)
MAX_VIS_IMAGES = 64  # rows of a reconstruction figure


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    group: str | None = None,
    choices: tuple | list | None = None,
    metavar: str | tuple[str, ...] | None = None,
    negatable: bool = False,
    const: Any = None,
    positional: bool = False,
    nargs: str | None = None,
    aliases: tuple[str, ...] = (),
    cli: bool = True,
) -> Any:
    """A dataclass field with its command-line help.

    Args:
        default: the default; a dict or list is copied for each instance.
        help: one line for ``--help``; "(default: ...)" inside it replaces the printed default.
        group: the ``--help`` section it is listed in.
        choices: the allowed values (for the command line and :func:`from_mapping`).
        metavar: the placeholder shown in ``--help``.
        negatable: a bool given as ``--x / --no-x`` rather than ``--x`` alone.
        const: for an optional value (``--resume`` alone means ``const``).
        positional: an argument without ``--``.
        nargs: for a list, "*" when an empty list may be given (default "+": at least one).
        aliases: other spellings of the flag (``--model`` for ``--models``).
        cli: False for a setting that is not a command-line flag (only JSON and Python set it).
    """
    metadata = dict(
        help=help,
        group=group,
        choices=choices,
        metavar=metavar,
        negatable=negatable,
        const=const,
        positional=positional,
        nargs=nargs,
        aliases=aliases,
        cli=cli,
    )
    if isinstance(default, dict | list):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def option_metadata(cls: type, name: str) -> dict[str, Any]:
    """The :func:`option` metadata of field ``name``, from ``cls`` or the first parent that has it."""
    for klass in cls.__mro__:
        field = getattr(klass, "__dataclass_fields__", {}).get(name)
        if field is not None and field.metadata:
            return dict(field.metadata)
    return {}


def field_types(cls: type) -> dict[str, Any]:
    """Each field's type, resolved (the modules use ``from __future__ import annotations``)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def describe(kind: Any) -> str:
    """A type in words, for error messages: 'an integer', 'a number or null', ..."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if _is_optional(kind):
        return f"{describe(args[0])} or null"
    origin = typing.get_origin(kind)
    if origin is tuple:
        return f"a list of {describe(typing.get_args(kind)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict or kind is dict:
        return "a JSON object"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}.get(kind, str(kind))


def _is_optional(kind: Any) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind)


def coerce(kind: Any, value: Any) -> Any:
    """``value`` as a ``kind``, or raise ValueError: ints pass as floats, lists as tuples; bools are
    never numbers; non-finite numbers are refused."""
    if _is_optional(kind):
        return None if value is None else coerce(next(a for a in typing.get_args(kind) if a is not type(None)), value)
    origin = typing.get_origin(kind)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError
        element_types = typing.get_args(kind)
        if len(element_types) == 2 and element_types[1] is Ellipsis:
            return tuple(coerce(element_types[0], v) for v in value)
        if len(value) != len(element_types):
            raise ValueError
        return tuple(coerce(t, v) for t, v in zip(element_types, value, strict=True))
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise ValueError
        return dict(value)
    if kind is Any:
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ValueError
        return value
    raise ValueError


def check_types(config: Any, what: str | None = None) -> None:
    """Raise ConfigError naming the first field whose value does not have its declared type
    (or is a non-finite number), or is not one of its choices."""
    what = what or type(config).__name__
    for name, kind in field_types(type(config)).items():
        value = getattr(config, name)
        try:
            coerce(kind, value)
        except ValueError:
            raise ConfigError(f"{what}: {name} must be {describe(kind)}, got {value!r}") from None
        choices = option_metadata(type(config), name).get("choices")
        for item in value if isinstance(value, tuple) else (value,):
            if choices and item is not None and item not in choices:
                raise ConfigError(
                    f"{what}: unknown {name.replace('_', ' ')} {item!r}; choose one of {', '.join(map(str, choices))}"
                )


def from_mapping(cls: type, values: dict[str, Any], what: str, fixed: dict[str, str] | None = None) -> Any:
    """``cls(**values)`` after checking ``values``: every key a field of ``cls``, every value of its type.

    ``what`` names the settings in errors (e.g. "--linprobe"); ``fixed`` maps keys that the caller
    sets itself to the option that sets them (a key given twice is an error, not a silent choice).
    """
    names = [f.name for f in dataclasses.fields(cls)]
    kinds = field_types(cls)
    converted = {}
    for key, value in values.items():
        if fixed and key in fixed:
            raise ConfigError(f"{what} sets {key!r}, which {fixed[key]} sets for every run; give it there, once")
        if key not in kinds:
            raise ConfigError(f"{what}: unknown setting {key!r}; allowed: {', '.join(sorted(names))}")
        try:
            converted[key] = coerce(kinds[key], value)
        except ValueError:
            raise ConfigError(f"{what}: {key} must be {describe(kinds[key])}, got {json_text(value)}") from None
    return cls(**converted)


def json_text(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def need(ok: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)


# ---------------------------------------------------------------------------------------- the command line


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg}): {text}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"decoder_depth\": 1}}', got {text}")
    return value


def _flag_kwargs(kind: Any, meta: dict[str, Any], default: Any) -> dict[str, Any]:
    """argparse's keywords for a field of type ``kind`` with :func:`~mae_course.config.option` metadata."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    base = args[0] if typing.get_origin(kind) in (typing.Union, types.UnionType) else kind
    kwargs: dict[str, Any] = {"default": default, "help": meta["help"] or None}
    if meta["metavar"] is not None:
        kwargs["metavar"] = meta["metavar"]
    if base is bool:
        negatable = meta["negatable"] or default is not False
        kwargs["action"] = argparse.BooleanOptionalAction if negatable else "store_true"
        return kwargs
    origin = typing.get_origin(base)
    if origin is dict or base is dict:
        return {**kwargs, "type": _json_object, "metavar": meta["metavar"] or "JSON"}
    if origin is tuple:
        element, *rest = typing.get_args(base)
        kwargs["nargs"] = meta.get("nargs") or ("+" if rest == [Ellipsis] else len(rest) + 1)
        if element is not Any:
            kwargs["type"] = element
    else:
        kwargs["type"] = base
    if meta["const"] is not None:
        kwargs.update(nargs="?", const=meta["const"])
    if meta["choices"] is not None:
        kwargs["choices"] = list(meta["choices"])
    return kwargs


def add_options(parser: argparse.ArgumentParser, cls: type, defaults: dict[str, Any] | None = None) -> None:
    """Add one flag per field of the dataclass ``cls`` (those made with ``option(..., cli=True)``),
    in ``--help`` sections by their group; ``defaults`` overrides the command-line defaults."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    kinds = field_types(cls)
    for field in dataclasses.fields(cls):
        meta = option_metadata(cls, field.name)
        if not meta or not meta["cli"]:
            continue
        group = meta["group"]
        target = parser if group is None else groups.setdefault(group, parser.add_argument_group(group))
        if meta["positional"]:
            target.add_argument(field.name, help=meta["help"])
            continue
        default = (defaults or {}).get(field.name, _default(field))
        flags = ["--" + field.name.replace("_", "-"), *meta["aliases"]]
        target.add_argument(*flags, dest=field.name, **_flag_kwargs(kinds[field.name], meta, default))


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def from_args(cls: type, args: argparse.Namespace, **values: Any) -> Any:
    """The dataclass ``cls`` from the parsed flags (lists become the fields' tuples), and ``values``."""
    kinds = field_types(cls)
    for field in dataclasses.fields(cls):
        if field.name in values or not hasattr(args, field.name):
            continue
        value = getattr(args, field.name)
        try:
            values[field.name] = coerce(kinds[field.name], value)
        except ValueError:
            values[field.name] = value  # the dataclass's own validation names what is wrong
    return cls(**values)


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where its help already says it in words."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.help and "(default" in action.help:
            return action.help
        return super()._get_help_string(action)


# ---------------------------------------------------------------------------------------- shared options


@dataclass
class DataOptions:
    """Where the images come from."""

    data: str = option(
        BUILTIN, "builtin (generated, no download), cifar10, stl10, imagenette, or an ImageFolder path", group="data"
    )
    data_root: str | None = option(
        None, "where named datasets live (default: ~/.cache/mae_course/datasets)", group="data"
    )
    download: bool = option(False, "download a named dataset that is not there yet", group="data")
    skip_bad_images: bool = option(False, "skip (and count) unreadable image files instead of stopping", group="data")
    image_size: int = option(32, "input side in pixels; a multiple of the patch size", group="data")
    subset: int | None = option(None, "use only the first N training images", group="data")
    num_workers: int | None = option(
        None,
        "DataLoader workers per process (default: 0 for built-in data, else one per spare core of this "
        "process's share of the cores, at most 8; never more than that share)",
        group="data",
    )

    def validate_data(self) -> None:
        need(self.image_size > 0, f"image size must be positive, got {self.image_size}")
        need(
            self.image_size <= MAX_IMAGE_SIZE,
            f"image size must be at most {MAX_IMAGE_SIZE} pixels, got {self.image_size}",
        )
        need(self.subset is None or self.subset >= 1, f"subset must be at least 1 image, got {self.subset}")
        need(self.num_workers is None or self.num_workers >= 0, f"num workers must be >= 0, got {self.num_workers}")


@dataclass
class OptimOptions:
    """How long and how fast the weights move."""

    epochs: int = option(10, "passes over the training images", group="optimization")
    warmup_epochs: float = option(1.0, "epochs of linear lr warmup", group="optimization")
    batch_size: int = option(64, "images per process per step", group="optimization")
    accum_iter: int = option(1, "gradient accumulation steps", group="optimization")
    blr: float = option(
        5e-3, "base lr: lr = blr x effective batch / 256 (effective = batch x accum x processes)", group="optimization"
    )
    lr: float | None = option(None, "absolute lr (overrides --blr)", group="optimization")
    min_lr: float = option(0.0, "the lr at the end of the cosine decay", group="optimization")
    weight_decay: float = option(0.05, "AdamW weight decay (weight matrices only)", group="optimization")
    amp: str = option(
        "auto",
        "mixed precision: auto = bf16 (or fp16 + scaler) on GPU, none on CPU",
        group="optimization",
        choices=("auto", "bf16", "fp16", "none"),
    )

    def validate_optim(self) -> None:
        need(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}")
        need(
            self.warmup_epochs is None or 0 <= self.warmup_epochs <= self.epochs,
            f"warmup epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}",
        )
        need(self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}")
        need(self.accum_iter >= 1, f"accum iter must be at least 1, got {self.accum_iter}")
        need(self.blr > 0, f"base lr must be a positive number, got {self.blr}")
        need(self.lr is None or self.lr > 0, f"lr must be a positive number, got {self.lr}")
        need(self.min_lr >= 0, f"min lr must be non-negative, got {self.min_lr}")
        need(self.weight_decay >= 0, f"weight decay must be non-negative, got {self.weight_decay}")


# Settings a run may change when it resumes, for they change what is reported, where or how fast,
# not what is computed: a resumed run prints every other setting that differs from its checkpoint's.
NOT_COMPARED = frozenset(
    {"resume", "overwrite", "output_dir", "device", "num_workers", "log_every", "save_every", "optimizer_impl"}
)


@dataclass
class RunOptions:
    """Where a run writes, and how it starts."""

    output_dir: str = option("runs/run", "the run's folder", group="run")
    resume: str | None = option(
        None,
        "continue a run (default: OUTPUT_DIR/checkpoint-last.pth)",
        group="run",
        metavar="CHECKPOINT",
        const="auto",
    )
    overwrite: bool = option(False, "start over in an output dir that already holds a run", group="run")
    seed: int = option(0, "seed of every random choice: initialisation, data order, crops, masks", group="run")
    device: str = option("auto", "auto, cpu, cuda or cuda:N (under torchrun: each process's local GPU)", group="run")
    log_every: int = option(10, "optimizer steps between log lines", group="run")
    save_every: int = option(1, "epochs between checkpoints", group="run")

    def validate_run(self) -> None:
        need(self.log_every >= 1, f"log every must be at least 1, got {self.log_every}")
        need(self.save_every >= 1, f"save every must be at least 1, got {self.save_every}")
        need(0 <= self.seed <= MAX_SEED, f"seed must be an integer from 0 to {MAX_SEED}, got {self.seed}")
