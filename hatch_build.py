"""Build hook: compiles Ferryman's request path (``http/``, ``pool/``, ``alerts``) with mypyc.

``pip install .`` and wheel builds get the compiled modules next to their Python
sources (the extension modules win at import). Without a C compiler, or if mypyc
fails for any reason, the build says so in one line and goes on pure Python: the
same behaviour, slower. Editable installs (``pip install -e``) stay pure, so that a
stale compiled module never shadows edited source.

``FERRYMAN_BUILD`` chooses explicitly: ``pure`` (never compile), ``compiled``
(compile, and fail the build if that fails), ``auto`` (the default).

This file is build machinery only; pyproject.toml stays the one source of metadata.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: What is compiled, relative to src/ (the loaders run under the app's interpreter: never).
COMPILED = [
    "ferryman/http",
    "ferryman/pool",
    "ferryman/alerts.py",
    "ferryman/log.py",
    "ferryman/supervisor.py",
]


class MypycBuildHook(BuildHookInterface[Any]):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        mode = os.environ.get("FERRYMAN_BUILD", "auto").strip().lower() or "auto"
        if mode not in ("auto", "pure", "compiled"):
            raise ValueError(f"FERRYMAN_BUILD={mode!r}: must be auto, pure or compiled")
        if mode == "pure" or (version == "editable" and mode != "compiled"):
            return
        if version == "editable":
            raise ValueError(
                "FERRYMAN_BUILD=compiled with an editable install: compiled modules would "
                "shadow the edited sources; install without -e to get the compiled build"
            )
        try:
            built = self._compile()
        except (Exception, SystemExit) as exc:  # no compiler, no mypyc, a mypyc error: pure
            # (mypyc reports the code it cannot compile with sys.exit, after printing it.)
            if mode == "compiled":
                raise
            sys.stderr.write(
                f"ferryman: building pure Python, not compiled ({why_not(exc)}): "
                "the same behaviour, slower\n"
            )
            return
        for source, target in built.items():
            build_data["force_include"][source] = target
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def _compile(self) -> dict[str, str]:
        """Compile with mypyc into a temporary directory: {built file: path in the wheel}."""
        src = Path(self.root) / "src"
        out = Path(tempfile.mkdtemp(prefix="ferryman-mypyc-"))
        try:
            built = self._compile_into(src, out)
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)
            raise
        self._out = out  # the built files are copied into the wheel; removed in finalize()
        return built

    def _compile_into(self, src: Path, out: Path) -> dict[str, str]:
        from mypyc.build import mypycify  # noqa: PLC0415 - only in the build environment
        from setuptools import Distribution  # noqa: PLC0415
        from setuptools.command.build_ext import build_ext  # noqa: PLC0415

        here = os.getcwd()
        os.chdir(src)  # mypyc names modules after the paths it is given
        try:
            extensions = mypycify(
                [
                    *COMPILED,
                    *("--config-file", str(Path(self.root) / "pyproject.toml")),
                    *("--cache-dir", str(out / "mypy-cache")),  # nothing left in the checkout
                ],
                opt_level="3",
                target_dir=str(out / "c"),
            )
            dist = Distribution({"name": "ferryman", "ext_modules": extensions})
            command = build_ext(dist)
            command.build_lib = str(out / "lib")
            command.build_temp = str(out / "temp")
            command.ensure_finalized()
            command.run()
        finally:
            os.chdir(here)
        built = {}
        for path in (out / "lib").rglob("*.so"):
            built[str(path)] = str(path.relative_to(out / "lib"))
        if not built:
            raise RuntimeError("mypyc produced no extension modules")
        return built

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        out = getattr(self, "_out", None)
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)


def why_not(exc: BaseException) -> str:
    """The reason a compiled build failed, in a few words."""
    if isinstance(exc, ImportError):
        return f"{exc.name or 'mypyc'} is not installed"
    if isinstance(exc, SystemExit):
        return "mypyc cannot compile the code, see its errors above"
    text = str(exc)
    if type(exc).__name__ in ("CompileError", "LinkError", "CalledProcessError"):
        # "Command '['gcc', '-Wsign-compare', ...]' returned non-zero exit status 1."
        program = re.search(r"""\[['"]([^'"]+)""", text)
        shown = program.group(1) if program else "the C compiler"
        return f"{shown} failed; is a C compiler installed?"
    if isinstance(exc, FileNotFoundError):
        return f"{exc.filename or 'the C compiler'} not found; is a C compiler installed?"
    lines = text.strip().splitlines()
    return (lines[-1] if lines else type(exc).__name__)[:160]
