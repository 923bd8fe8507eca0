"""How a generic app's command is run: exec'd when the shell need not stay around."""

from __future__ import annotations

import pytest

from ferryman.spawning.spawner import command_argv


@pytest.mark.parametrize(
    "command",
    ["python3 server.py", "bundle exec puma -b tcp://127.0.0.1:$PORT", "  ./server --port=$PORT"],
)
def test_one_simple_command_is_execd(command: str) -> None:
    assert command_argv(command) == ["/bin/sh", "-c", "exec " + command]


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
        "if true\nthen ./server\nfi",
        "{ ./server; }",
        "python3 -c 'print(1)'",  # quoted parentheses: kept as given, to be safe
        "",
    ],
)
def test_anything_else_runs_as_given(command: str) -> None:
    assert command_argv(command) == ["/bin/sh", "-c", command]
