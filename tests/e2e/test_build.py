"""The build hook (hatch_build.py) as pip runs it: compiled where it can, pure where not.

Each test builds a copy of the project with hatchling's own build functions (what pip
calls, without build isolation), with a C compiler that always fails (``CC=/bin/false``)
so that no test depends on the compiler's speed. The compiled build itself is built and
run by .ci/run, which runs the whole suite against it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
NOTICE = "ferryman: building pure Python, not compiled"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of what a build reads: sources, metadata, the hook, the README."""
    copy = tmp_path / "project"
    copy.mkdir()
    shutil.copytree(
        REPOSITORY / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.so")
    )
    for name in ("pyproject.toml", "hatch_build.py", "README.md"):
        shutil.copy2(REPOSITORY / name, copy / name)
    return copy


def build(
    project: Path, kind: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """Build a ``wheel`` or an ``editable`` wheel: (the run, the output dir, its TMPDIR)."""
    out = project.parent / "dist"
    temp = project.parent / "tmp"
    out.mkdir(exist_ok=True)
    temp.mkdir(exist_ok=True)
    full_env = {**os.environ, "CC": "/bin/false", "TMPDIR": str(temp)}
    full_env.pop("FERRYMAN_BUILD", None)  # the default, unless the test says otherwise
    full_env.update(env)
    code = f"import hatchling.build as b; print(b.build_{kind}({str(out)!r}))"
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return run, out, temp


def wheel_files(out: Path) -> tuple[str, list[str]]:
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return wheel.name, archive.namelist()


def test_without_a_c_compiler_the_wheel_is_pure_and_says_why_in_one_line(
    project: Path,
) -> None:
    run, out, temp = build(project, "wheel")
    assert run.returncode == 0, run.stderr
    notices = [line for line in run.stderr.splitlines() if NOTICE in line]
    assert notices == [
        f"{NOTICE} (/bin/false failed; is a C compiler installed?): the same behaviour, slower"
    ], run.stderr
    name, files = wheel_files(out)
    assert name.endswith("-py3-none-any.whl"), name
    assert "ferryman/http/front.py" in files
    assert "ferryman/loaders/wsgi_loader.py" in files
    assert not [f for f in files if f.endswith(".so")], files
    # Nothing left behind: not in the temp directory, not in the checkout.
    assert list(temp.iterdir()) == []
    assert not (project / "src" / ".mypy_cache").exists()
    assert not list((project / "src").rglob("*.so"))


def test_code_mypyc_cannot_compile_gives_a_pure_wheel_too(project: Path) -> None:
    """mypyc stops on code it cannot compile (with sys.exit, not an exception): that is
    a fall-back to pure Python like any other, not a failed install."""
    with (project / "src" / "ferryman" / "alerts.py").open("a") as module:
        # Fine for Python; mypyc refuses a plain class attribute read through the class.
        module.write("\n\nclass _Names:\n    A = 'a'\n\n\n_A = _Names.A\n")
    run, out, temp = build(project, "wheel", CC="cc")
    assert run.returncode == 0, run.stderr
    notices = [line for line in run.stderr.splitlines() if NOTICE in line]
    assert notices == [
        f"{NOTICE} (mypyc cannot compile the code, see its errors above): "
        "the same behaviour, slower"
    ], run.stderr
    assert "Cannot access instance attribute" in run.stdout + run.stderr
    assert wheel_files(out)[0].endswith("-py3-none-any.whl")
    assert list(temp.iterdir()) == []


def test_a_compiled_build_that_cannot_compile_fails(project: Path) -> None:
    """FERRYMAN_BUILD=compiled: no silent fallback (a packager asked for the fast build)."""
    run, out, temp = build(project, "wheel", FERRYMAN_BUILD="compiled")
    assert run.returncode != 0
    assert not list(out.glob("*.whl"))
    assert list(temp.iterdir()) == []


def test_a_pure_build_never_tries_to_compile(project: Path) -> None:
    run, out, _ = build(project, "wheel", FERRYMAN_BUILD="pure")
    assert run.returncode == 0, run.stderr
    assert NOTICE not in run.stderr  # mypyc never ran, so nothing failed
    name, files = wheel_files(out)
    assert name.endswith("-py3-none-any.whl")
    assert "ferryman/http/front.py" in files


def test_an_editable_install_stays_pure_and_refuses_to_be_compiled(project: Path) -> None:
    """A compiled module next to edited sources would shadow them: editable is pure."""
    run, out, _ = build(project, "editable")
    assert run.returncode == 0, run.stderr
    assert NOTICE not in run.stderr
    assert not [f for f in wheel_files(out)[1] if f.endswith(".so")]

    refused, _, _ = build(project, "editable", FERRYMAN_BUILD="compiled")
    assert refused.returncode != 0
    assert "install without -e to get the compiled build" in refused.stderr


def test_an_unknown_build_choice_names_the_setting_and_the_choices(project: Path) -> None:
    run, _, _ = build(project, "wheel", FERRYMAN_BUILD="fast")
    assert run.returncode != 0
    assert "FERRYMAN_BUILD='fast': must be auto, pure or compiled" in run.stderr
