"""Ferryman: a polyglot application server with a least-busy process pool."""

import importlib.machinery
import importlib.util
import sys

__version__ = "0.1.0"


def build() -> str:
    """Which build is running: ``compiled`` (mypyc, see hatch_build.py) or ``pure``.

    Judged by the front module, the heart of the compiled request path: an extension
    module is found before a Python source of the same name.
    """
    spec = importlib.util.find_spec("ferryman.http.front")
    origin = spec.origin if spec is not None else None
    if origin and origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
        return "compiled"
    return "pure"


def describe() -> str:
    """``ferryman 0.1.0 (compiled build, Python 3.11.2)``: for --version and the banner."""
    python = ".".join(str(part) for part in sys.version_info[:3])
    return f"ferryman {__version__} ({build()} build, Python {python})"
