"""Shared plumbing of the experiment scripts: typed configs with command-line overrides,
presets, run directories and result tables.

Every experiment declares a frozen dataclass of its settings. ``parse_config`` builds it
from a preset plus ``--field value`` overrides (one flag per field, typed from the
dataclass annotation; tuples take comma-separated values), then calls the config's
``validate()`` so a bad value is rejected *before* any training starts, with a message
that names the field.
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
from typing import Any, Mapping, Sequence


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


def parse_config(cls, presets: Mapping[str, Mapping[str, Any]], argv: Sequence[str] | None = None,
                 description: str | None = None):
    """Build ``cls`` from ``--preset NAME`` and ``--field value`` overrides; then ``validate()``.

    Returns ``(config, args)``; ``args.out`` is the run directory (``--out``).
    """
    hints = typing.get_type_hints(cls)
    parser = argparse.ArgumentParser(description=description or cls.__doc__,
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


def run_dir(path: str | None, default_name: str) -> Path:
    """Create (if needed) and return the run directory."""
    out = Path(path) if path else Path("runs") / default_name
    out.mkdir(parents=True, exist_ok=True)
    return out


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


class Streams:
    """Named PRNG streams of one experiment seed: every random quantity of a run has a name.

    ``key(name)`` gives the stream's key and ``keys(name, runs)`` one key per vmapped run
    (run ``r`` is ``fold_in(fold_in(PRNGKey(seed), r), index)``, the same for every method,
    so methods compare on identical data, noise and times). The derivations are fixed
    by :data:`OFFSETS` and :data:`RUN_STREAMS` so that results stay reproducible.
    """

    #: ``key(name) = PRNGKey(seed + offset)``.
    OFFSETS = {"x0": 1, "metric": 3, "reference": 5, "heldout": 1_000_003}
    #: ``keys(name, R)[r] = fold_in(fold_in(PRNGKey(seed), r), index)``.
    RUN_STREAMS = {"init": 0, "train": 1, "sampler": 2}

    def __init__(self, seed: int):
        self.seed = int(seed)

    def key(self, name: str):
        import jax

        return jax.random.PRNGKey(self.seed + self.OFFSETS[name])

    def keys(self, name: str, runs: int):
        import jax
        import jax.numpy as jnp

        base = jax.random.PRNGKey(self.seed)
        index = self.RUN_STREAMS[name]
        return jnp.stack([jax.random.fold_in(jax.random.fold_in(base, r), index) for r in range(runs)])

    @staticmethod
    def indexed(i: int):
        """A seed-independent key per index (e.g. per evaluation time): ``PRNGKey(10_000 + i)``."""
        import jax

        return jax.random.PRNGKey(10_000 + i)


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
    without a traceback; anything else propagates."""
    try:
        main()
    except (ConfigError, *expected_errors) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
