"""`directus-sync --version`, and help text on every command, argument and option."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import typer
from typer.testing import CliRunner

from directus_sync.control import cli


def test_version_comes_from_the_package_metadata() -> None:
    result = CliRunner().invoke(cli.app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"directus-sync {metadata.version('directus-sync')}\n"


def test_every_command_argument_and_option_has_help() -> None:
    missing, seen = [], []

    def walk(command: Any, path: str) -> None:  # typer's own click: no isinstance
        if not command.help:
            missing.append(path)
        for param in command.params:
            seen.append(param.name)
            if not getattr(param, "help", None):
                missing.append(f"{path} {param.name}")
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(cli.app), "directus-sync")
    assert len(seen) > 20  # the walk reached every command's parameters
    assert missing == []


def test_help_shows_arguments_with_their_text() -> None:
    result = CliRunner().invoke(cli.app, ["remote", "show", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "The remote's name" in result.output
    result = CliRunner().invoke(cli.app, ["--help"], env={"COLUMNS": "200"})
    assert "--version" in result.output and "Print the version" in result.output
