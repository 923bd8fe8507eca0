"""--memory-limit reads the resident memory of an app process *with its children*: a
worker that hands its work to a child (an image converter, a subprocess pool) is held to
the limit as a whole."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from ferryman.supervisor import MB, tree_rss

#: A child that writes (so that the pages are resident) 80 MB, says so, and waits.
_HOLDER = (
    "import sys, time; data = b'x' * (80 * 1024 * 1024); print('ready', flush=True); "
    "sys.stdin.read()"
)


def test_the_memory_of_children_and_grandchildren_is_counted() -> None:
    before = tree_rss(os.getpid())
    assert before > 10 * MB  # this interpreter itself, at least
    # A child that starts a grandchild holding the memory: two levels down.
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', sys.argv[1]], "
         "stdin=subprocess.PIPE, stdout=sys.stdout); sys.stdin.read(); p.stdin.close(); p.wait()",
         _HOLDER],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == b"ready\n"
        with_them = tree_rss(os.getpid())
        assert with_them - before > 75 * MB, (before // MB, with_them // MB)
    finally:
        child.stdin.close()  # the child closes the grandchild's stdin: both exit
        child.wait(30)
        child.stdout.close()
    deadline = time.monotonic() + 10
    while tree_rss(os.getpid()) - before > 20 * MB and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tree_rss(os.getpid()) - before < 20 * MB


def test_a_process_that_is_gone_weighs_nothing() -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert tree_rss(int(done.stdout)) == 0
