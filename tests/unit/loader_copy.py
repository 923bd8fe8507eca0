"""The WSGI loader imported from its file, as the app's interpreter runs it (stdlib only)."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from types import ModuleType

import ferryman

LOADER_PATH = Path(ferryman.__file__).resolve().parent / "loaders" / "wsgi_loader.py"


@cache
def wsgi_loader() -> ModuleType:
    """The loader module, loaded once from its path and not registered in sys.modules."""
    spec = importlib.util.spec_from_file_location("ferryman_test_wsgi_loader", LOADER_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
