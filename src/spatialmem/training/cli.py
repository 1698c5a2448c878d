"""The command line ``python -m spatialmem.training`` (single process) or ``torchrun``.

Trains a registered sequence model (Spann3R) with [`train`][spatialmem.training.runner.train]:

```bash
torchrun --nproc_per_node 2 -m spatialmem.training --model spann3r_tiny --steps 100 \\
    --batch-size 2 --out tiny.pt
```

The parser is generated from the fields of
[`TrainConfig`][spatialmem.training.config.TrainConfig] (``num_frames`` becomes
``--num-frames``, a boolean ``curriculum`` becomes ``--curriculum`` / ``--no-curriculum``), with
each field's docstring as its help. ``--config recipe.toml`` reads the fields from a TOML file
first ([`TrainConfig.from_toml`][spatialmem.training.config.TrainConfig.from_toml]); options
given on the command line override it.
"""

import argparse
import ast
import dataclasses
import inspect
import itertools
import logging
import re
import textwrap
import typing
from collections.abc import Sequence

from spatialmem.training.config import TrainConfig, _argument_type, read_config_file
from spatialmem.training.distributed import cleanup, init_distributed, setup_logging
from spatialmem.training.runner import train

__all__ = ["build_parser", "config_from_args", "main", "parse_config"]

# Extra command-line spellings of TrainConfig fields (kept from earlier versions of the CLI).
_FLAG_ALIASES: dict[str, tuple[str, ...]] = {"num_frames": ("--frames",)}


def _field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass (the string literal after each field), read from
    its source; empty if the source is not available."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = following.value.value
    return docs


def _plain_help(doc: str) -> str:
    """A field docstring as one line of command-line help (markup removed, ``%`` escaped)."""
    text = re.sub(r"\[`?([^\]`]+)`?\]\[[^\]]*\]", r"\1", doc)  # [`Name`][path] -> Name
    text = " ".join(text.replace("``", "").split())
    return text.replace("%", "%%")


def _add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One option per field of the dataclass ``cls``: ``--field-name`` (plus
    ``_FLAG_ALIASES``), typed from the annotation, defaulting to the field default, with the
    field's docstring as help. A boolean field becomes ``--name`` / ``--no-name``."""
    docs = _field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flags = ("--" + f.name.replace("_", "-"), *_FLAG_ALIASES.get(f.name, ()))
        help_text = _plain_help(docs.get(f.name, "")) + " (default: %(default)s)"
        kind, choices = _argument_type(hints[f.name])
        if kind is bool:
            parser.add_argument(
                *flags,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=f.default,
                help=help_text,
            )
        else:
            parser.add_argument(
                *flags, dest=f.name, type=kind, choices=choices, default=f.default, help=help_text
            )


def build_parser(*, config_file: bool = False) -> argparse.ArgumentParser:
    """The command-line parser of ``python -m spatialmem.training``: one option per field of
    [`TrainConfig`][spatialmem.training.config.TrainConfig] (``--batch-size`` for
    ``batch_size``; ``--frames`` is also accepted for ``--num-frames``).

    Args:
        config_file: also accept ``--config FILE`` (a TOML file of field values, as
            [`TrainConfig.from_toml`][spatialmem.training.config.TrainConfig.from_toml] reads
            them); the parser only records the path, [`main`][spatialmem.training.cli.main]
            reads the file.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="python -m spatialmem.training",
        description=(
            "Train a Spann3R model on synthetic scenes with ground truth (run under torchrun for "
            "data parallelism)."
        ),
    )
    if config_file:
        parser.add_argument(
            "--config",
            metavar="TOML",
            default=None,
            help=(
                "TOML file of option values (keys: the option names below, with '_' or '-'); "
                "options given on the command line override it"
            ),
        )
    _add_config_arguments(parser, TrainConfig)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Translate parsed command-line options into a
    [`TrainConfig`][spatialmem.training.config.TrainConfig] (a ``--max-grad-norm`` of ``<= 0``
    disables clipping)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    max_norm = values["max_grad_norm"]
    values["max_grad_norm"] = None if max_norm is None or max_norm <= 0 else max_norm
    return TrainConfig(**values)


def parse_config(
    argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None
) -> TrainConfig:
    """The settings of a command line: ``--config FILE`` first, then the explicit options.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
        parser: from ``build_parser(config_file=True)`` (default: a new one).

    Returns:
        The settings.

    Raises:
        SystemExit: bad options or a bad config file (argparse's usage error, exit code 2).
    """
    parser = parser or build_parser(config_file=True)
    args = parser.parse_args(argv)
    if getattr(args, "config", None) is not None:
        try:
            file_values = read_config_file(args.config)
        except (OSError, ValueError) as err:
            parser.error(f"--config: {err}")
        parser.set_defaults(**file_values)  # explicit options still win
        args = parser.parse_args(argv)
    try:
        return config_from_args(args)
    except ValueError as err:
        parser.error(str(err))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (0 on success).

    ``--config recipe.toml`` reads the options from a TOML file first; the options given on the
    command line override the file's.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
    """
    config = parse_config(argv)
    ctx = init_distributed(device=config.device)
    if not logging.getLogger().handlers:
        setup_logging(ctx)
    try:
        train(config, ctx)
    finally:
        cleanup(ctx)
    return 0
