"""Command-line flags generated from :class:`~stepline.engine._config.Config`'s fields.

The flag name, metavar, help text and default all come from the field (its :class:`Flag`
metadata), and the flag's value goes through the field's own converter and validator, so a bad
value is refused by argparse with the message ``Config`` itself would give.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from ..engine._config import Config, Flag, flag_of

__all__ = ["add_config_flags", "config_from_args", "flag_name"]

if TYPE_CHECKING:
    # What ArgumentParser.add_subparsers() returns, to which each command adds its parser:
    # argparse names the type only privately (hence the noqa; this is its one use), and
    # typeshed makes it generic over the parser (hence for the type checker only).
    Subcommands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]  # noqa: SLF001


def flag_name(attribute: attrs.Attribute[Any]) -> str:
    """The flag of a :class:`Config` field: ``--queue`` for ``queue_size``, else its name."""
    return flag_of(attribute).name or "--" + attribute.name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """Add a flag per :class:`Config` field (or per field named in ``names``)."""
    wanted = None if names is None else set(names)
    for attribute in attrs.fields(Config):
        if wanted is None or attribute.name in wanted:
            _add_flag(parser, attribute)


def config_from_args(args: argparse.Namespace) -> Config:
    """The :class:`Config` of parsed flags (each field from the flag of the same ``dest``)."""
    return Config(**{a.name: getattr(args, a.name) for a in attrs.fields(Config)})


def _add_flag(parser: argparse.ArgumentParser, attribute: attrs.Attribute[Any]) -> None:
    flag = flag_of(attribute)
    if flag.parse is None:
        parser.add_argument(
            flag_name(attribute), dest=attribute.name, action="store_true", help=flag.help
        )
        return
    parser.add_argument(
        flag_name(attribute),
        dest=attribute.name,
        type=_parser(attribute, flag.parse),
        choices=flag.choices,
        default=attribute.default,
        metavar=flag.metavar,
        help=_help(flag),
    )


def _help(flag: Flag) -> str:
    """The flag's help; a default that does not show as itself (None for "all") is spelt out,
    the others are added by the parser's help formatter."""
    text = flag.help.replace("%", "%%")
    return text if flag.default is None else f"{text} (default: {flag.default})"


def _parser(attribute: attrs.Attribute[Any], parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Text to value as a keyword would become one (through ``Config`` itself, so its converter
    and validator run); a refusal becomes argparse's usage error with the field's own message."""

    def convert(text: str) -> Any:
        try:
            return getattr(Config(**{attribute.name: parse(text)}), attribute.name)
        except (ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = attribute.name  # argparse names the type in some messages
    return convert
