"""Self-signed certificates and keys for the TLS tests, made with the openssl program.

Each pair is made at test time (a few ms for an EC key), so nothing secret or expiring
is kept in the repository. Without openssl the tests that need a pair are skipped on a
developer's machine and fail in CI (CI installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

OPENSSL = shutil.which("openssl")


def make_pair(directory: Path, name: str, common_name: str = "localhost") -> tuple[Path, Path]:
    """``directory/name.crt`` and ``directory/name.key``: a self-signed certificate for
    ``common_name`` (also 127.0.0.1 and localhost as subject alternative names)."""
    if OPENSSL is None:
        if os.environ.get("CI"):
            pytest.fail("the TLS tests need the openssl program")
        pytest.skip("the TLS tests need the openssl program")
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "3650", "-subj", f"/CN={common_name}",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


def encrypted_key(directory: Path, key: Path) -> Path:
    """``key`` protected by a passphrase."""
    assert OPENSSL is not None
    out = directory / "encrypted.key"
    subprocess.run(
        [OPENSSL, "pkey", "-in", str(key), "-aes256", "-passout", "pass:secret", "-out", str(out)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return out
