"""An app that fails at import, after printing something (the log must show it)."""

print("broken app: about to fail")
raise RuntimeError("the database is on fire")
