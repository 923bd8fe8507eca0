"""Ferryman: a polyglot application server with a least-busy process pool."""

__version__ = "0.1.0"
