"""How a generic app's command is run: exec'd when the shell need not stay around."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferryman.spawning.spawner import command_argv


@pytest.fixture
def path(tmp_path: Path) -> str:
    """A PATH with two programs on it."""
    for name in ("python3", "bundle"):
        program = tmp_path / name
        program.write_text("#!/bin/sh\n")
        program.chmod(0o755)
    return str(tmp_path)


@pytest.mark.parametrize(
    "command",
    [
        "python3 server.py",
        "bundle exec puma -b tcp://127.0.0.1:$PORT",
        "  ./server --port=$PORT",
        "bin/rails server -p $PORT",
    ],
)
def test_one_simple_command_running_a_program_is_execd(command: str, path: str) -> None:
    assert command_argv(command, path) == ["/bin/sh", "-c", "exec " + command]


@pytest.mark.parametrize(
    "command",
    [
        "cd web && ./server",
        "trap '' TERM; python3 server.py",
        "python3 server.py > out.log",
        "python3 server.py 2>&1 | tee log",
        "./server $(cat port)",
        "./server `cat port`",
        "PORT2=$PORT ./server",  # exec would take the assignment for the command
        "export A=1",
        "eval $START",  # a builtin: 'exec eval' is "not found"
        "time ./server",  # a keyword in bash, a program in dash: leave it to the shell
        "not-on-path --port $PORT",  # the shell's own "not found" message, as given
        "if true\nthen ./server\nfi",
        "{ ./server; }",
        "python3 -c 'print(1)'",  # quoted parentheses: kept as given, to be safe
        "",
    ],
)
def test_anything_else_runs_as_given(command: str, path: str) -> None:
    assert command_argv(command, path) == ["/bin/sh", "-c", command]
