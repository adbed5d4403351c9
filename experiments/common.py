"""Shared plumbing of the experiment scripts: typed configs with command-line overrides,
presets, run directories, named random streams, result tables and the script entry point.

Every experiment declares a frozen dataclass of its settings. ``parse_config`` builds it
from a preset plus ``--field value`` overrides (one flag per field, typed from the
dataclass annotation; tuples take comma-separated values), then calls the config's
``validate()`` so a bad value is rejected *before* any training starts, with a message
that names the field. Every bad command line (an unknown preset, a value that does not
parse, an invalid field, an ``--out`` that cannot be a directory) ends in one line
``error: ...`` on stderr and exit status 2 (:func:`cli`).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jflow._checks import check_positive_int


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and what is allowed."""


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


def _field_parser(annotation):
    """A function str -> value for a dataclass field annotation (int, float, str, bool, tuples)."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(annotation) if a is not Ellipsis}
        inner = _field_parser(item)
        return lambda text: tuple(inner(part) for part in text.split(",") if part.strip())
    if annotation is bool:
        return _parse_bool
    if annotation in (int, float, str):
        return annotation
    raise TypeError(f"unsupported config field type {annotation!r}")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`ConfigError` (one line), not a usage block and exit."""

    def error(self, message):
        raise ConfigError(message)


def parse_config(cls, presets: Mapping[str, Mapping[str, Any]], argv: Sequence[str] | None = None,
                 description: str | None = None):
    """Build ``cls`` from ``--preset NAME`` and ``--field value`` overrides; then ``validate()``.

    Returns ``(config, args)``; ``args.out`` is the run directory (``--out``).
    """
    hints = typing.get_type_hints(cls)
    script = cls.__module__.rpartition(".")[0]  # experiments.<name>.config -> experiments.<name>
    parser = _Parser(prog=f"python -m {script}", description=description or cls.__doc__,
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", default="default", choices=sorted(presets),
                        help="named set of defaults; flags below override it")
    parser.add_argument("--out", default=None, help="run directory (default: runs/<experiment>-<preset>)")
    for field in dataclasses.fields(cls):
        parser.add_argument(f"--{field.name}", type=_field_parser(hints[field.name]), default=None,
                            help=f"({hints[field.name].__name__ if hasattr(hints[field.name], '__name__') else hints[field.name]}) default {field.default!r}")
    args = parser.parse_args(argv)
    values = dict(presets[args.preset])
    values.update({f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                   if getattr(args, f.name) is not None})
    try:
        config = cls(**values)
    except TypeError as err:
        raise ConfigError(f"preset {args.preset!r}: {err}") from None
    config.validate()
    return config, args


def require(condition: bool, field: str, message: str):
    """Raise ``ConfigError`` for ``field`` unless ``condition``."""
    if not condition:
        raise ConfigError(f"config field {field!r}: {message}")


def require_positive_ints(config, *fields: str) -> None:
    """Raise ``ConfigError`` naming the first of ``fields`` of ``config`` that is not an int >= 1."""
    for field in fields:
        try:
            check_positive_int(getattr(config, field), field)
        except ValueError as err:
            raise ConfigError(f"config field {field!r}: {err}") from None


def run_dir(path: str | None, default_name: str) -> Path:
    """Create (if needed) and return the run directory; ``ConfigError`` if ``--out`` cannot be one."""
    out = Path(path) if path else Path("runs") / default_name
    blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ConfigError(f"--out {str(out)!r}: {str(blocker)!r} is a file, not a directory; "
                          f"pass a directory path")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out {str(out)!r}: cannot create the run directory ({err.strerror})") from None
    return out


class Streams(NamedTuple):
    """Named random streams of one experiment seed: ``streams.key(name, index)``.

    ``table`` maps each stream name to its derivation ``(seed, index) -> key``. A script
    declares its table once, with the derivations its published results were made with, so
    every key of a run has a name and renaming a stream never changes a number. ``index``
    is the run, the time, the example... that the stream is split over (``None`` when it is
    not split).
    """

    seed: int
    table: Mapping[str, Callable[[int, Any], jax.Array]]

    def key(self, name: str, index=None) -> jax.Array:
        if name not in self.table:
            raise ValueError(f"unknown random stream {name!r}; the streams are {sorted(self.table)}")
        return self.table[name](self.seed, index)

    def keys(self, name: str, n: int) -> jax.Array:
        """``(n, 2)`` keys of the stream ``name`` for the indices ``0, ..., n - 1``."""
        return jnp.stack([self.key(name, i) for i in range(n)])


def run_fold(stream: int) -> Callable[[int, int], jax.Array]:
    """Derivation ``fold_in(fold_in(PRNGKey(seed), run), stream)``: one key per run, a stream number apart."""
    return lambda seed, run: jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), run), stream)


def seed_offset(offset: int) -> Callable[[int, Any], jax.Array]:
    """Derivation ``PRNGKey(seed + offset)`` (not split over an index)."""
    return lambda seed, _: jax.random.PRNGKey(seed + offset)


def save_json(path: Path, obj) -> None:
    """Write JSON atomically (write a temporary file, then rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=float) + "\n")
    os.replace(tmp, path)


def write_table(rows: Sequence[Mapping[str, Any]], out_dir: Path, stem: str = "results") -> str:
    """Write rows as ``<stem>.json``, ``<stem>.csv`` and ``<stem>.md``; return the Markdown table."""
    rows = [dict(r) for r in rows]
    save_json(out_dir / f"{stem}.json", rows)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(out_dir / f"{stem}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    markdown = markdown_table(rows, columns)
    (out_dir / f"{stem}.md").write_text(markdown + "\n")
    return markdown


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    columns = list(columns or dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def progress(iterable=None, *, total=None, desc=None):
    """A tqdm progress bar on stderr (quiet when stderr is not a terminal and CI is set)."""
    from tqdm.auto import tqdm

    disable = bool(os.environ.get("CI")) and not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, disable=disable, dynamic_ncols=True)


class Timer:
    """Context manager measuring wall time in seconds (``.seconds``)."""

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._start
        return False


def cli(main, *expected_errors) -> None:
    """Run ``main()`` as a script: a ``ConfigError`` or one of ``expected_errors`` (bad data,
    a damaged checkpoint) prints ``error: <message>`` on stderr and exits with status 2,
    without a traceback; anything else propagates.

    Every script's ``__main__`` calls this, and nothing before it runs a JAX computation,
    so a process-wide setting that must precede the first one (an XLA flag) belongs here.
    """
    try:
        main()
    except (ConfigError, *expected_errors) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
