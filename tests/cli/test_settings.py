"""``stepline serve``'s executor flags come from ``Config``'s fields: names, defaults, help, checks.

The README's table of serve options is checked against the parser too, so the three places a
setting shows (``Config``, ``--help``, the README) cannot drift apart.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from stepline import Config
from stepline.cli._main import build_parser
from stepline.cli._settings import config_from_args, flag_name

README = Path(__file__).parents[2] / "README.md"


def _serve_parser() -> argparse.ArgumentParser:
    # argparse has no public way to list a parser's actions or to find its subcommands
    actions = build_parser()._actions  # noqa: SLF001
    commands = next(a for a in actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    parser: argparse.ArgumentParser = commands.choices["serve"]
    return parser


def _serve_flags() -> dict[str, argparse.Action]:
    return {
        action.option_strings[-1]: action
        for action in _serve_parser()._actions  # noqa: SLF001 (argparse: no public list)
        if action.option_strings and action.dest != "help"
    }


def test_every_config_field_is_a_serve_flag_with_its_default() -> None:
    flags = _serve_flags()
    for field in attrs.fields(Config):
        action = flags[flag_name(field)]
        assert action.dest == field.name
        assert action.default == field.default, field.name


def test_no_flags_given_is_the_default_config() -> None:
    args = _serve_parser().parse_args([])
    assert config_from_args(args) == Config()


def test_flags_become_the_config_through_its_converters() -> None:
    flags = "--workers 3 --queue 5 --on-full reject --heartbeat 0.5 --trace"
    flags += " --allow-run echo,true --alert-repeat 0 --keep 0"
    args = _serve_parser().parse_args(flags.split())
    assert config_from_args(args) == Config(
        workers=3,
        queue_size=5,
        on_full="reject",
        heartbeat=0.5,
        trace=True,
        allow_run=frozenset({"echo", "true"}),
        alert_repeat=0,
        keep=0,
    )


def _help_entries() -> dict[str, str]:
    """Each option of ``stepline serve --help``, as shown: flag -> its whole entry, one line."""
    entries: dict[str, str] = {}
    options = _serve_parser().format_help().split("options:\n", 1)[1]
    for entry in re.split(r"\n(?=  -)", options):
        words = entry.split()
        entries[words[0].rstrip(",")] = " ".join(words)
    return entries


def test_every_serve_flag_is_described_with_its_default() -> None:
    entries = _help_entries()
    for name, action in _serve_flags().items():
        shown = entries[name]
        assert action.help, f"{name} has no help"
        if action.nargs != 0:  # a switch has no default worth showing
            assert "(default: " in shown, name


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--workers", "0", "workers must be at least 1, got 0"),
        ("--keep", "-1", "keep must be at least 0, got -1"),
        ("--queue", "many", "expected a whole number, got 'many'"),
        ("--heartbeat", "inf", "heartbeat must be a finite number >= 0, got inf"),
        ("--callback-drain", "-1", "callback_drain must be a finite number >= 0"),
        ("--on-full", "drop", "on_full must be one of block, reject, got 'drop'"),
        ("--allow-run", "a,,b", "--allow-run entries must be non-empty program names"),
    ],
)
def test_a_bad_value_is_refused_by_the_real_cli_with_configs_message(
    flag: str, value: str, message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stepline", "serve", flag, value],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert f"argument {flag}: {message}" in done.stderr


def test_the_readme_table_lists_every_serve_flag_with_its_default() -> None:
    text = README.read_text()
    section = text[text.index("### `stepline serve` options") :]
    section = section[: section.index("\n### ", 1)]
    rows = re.findall(r"^\| `(--[a-z-]+)[^`]*` \| ([^|]*) \|", section, re.MULTILINE)
    table = {flag: default.strip() for flag, default in rows}
    flags = _serve_flags()
    assert sorted(table) == sorted(flags)
    for name, action in flags.items():
        if action.nargs == 0:
            assert table[name] == "off", name
        elif action.default is None:
            assert table[name] in {"—", "all"}, name
        elif isinstance(action.default, float):
            assert float(table[name]) == action.default, name
        else:
            assert table[name] == str(action.default), name
