"""TLS settings: the rules between ssl, its files and ports, and the files' checks at start."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import pytest

from ferryman.config import CONFIG_FILE, Config, resolve
from ferryman.errors import ConfigError
from ferryman.http import tls

from ..tls_files import encrypted_key, make_pair


def from_cli(app: Path, **cli: Any) -> Config:
    config, _ = resolve(app, cli, {})
    return config


def refused(app: Path, cli: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        resolve(app, cli, env or {})
    assert info.value.exit_code == 2
    message = str(info.value)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


def test_tls_is_off_by_default(tmp_path: Path) -> None:
    config = from_cli(tmp_path)
    assert not config.ssl
    assert config.ssl_certificate is None and config.ssl_port is None


def test_ssl_with_its_files_is_accepted(tmp_path: Path) -> None:
    config = from_cli(
        tmp_path, ssl=True, ssl_certificate="c.pem", ssl_certificate_key="k.pem", ssl_port="8443"
    )
    assert config.ssl and config.ssl_port == 8443
    assert (config.ssl_certificate, config.ssl_certificate_key) == ("c.pem", "k.pem")


@pytest.mark.parametrize(
    ("cli", "missing"),
    [
        ({"ssl": True}, "ssl_certificate"),
        ({"ssl": True, "ssl_certificate_key": "k.pem"}, "ssl_certificate"),
        ({"ssl": True, "ssl_certificate": "c.pem"}, "ssl_certificate_key"),
    ],
)
def test_ssl_without_certificate_or_key_is_refused(
    tmp_path: Path, cli: dict[str, Any], missing: str
) -> None:
    """One line naming ssl, its value and source, and the setting it needs."""
    message = refused(tmp_path, cli)
    assert message.startswith("invalid value true for ssl (from --ssl): it needs " + missing)
    assert "--" + missing.replace("_", "-") in message


def test_ssl_from_the_file_names_the_file_key(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("ssl = true\nssl_certificate = 'c.pem'\n")
    message = refused(tmp_path, {})
    assert f"for ssl (from {CONFIG_FILE} key ssl): it needs ssl_certificate_key" in message


def test_ssl_port_without_ssl_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, {}, {"FERRYMAN_SSL_PORT": "8443"})
    assert message.startswith("invalid value 8443 for ssl_port (from FERRYMAN_SSL_PORT)")
    assert "needs ssl" in message


def test_ssl_port_equal_to_port_is_refused(tmp_path: Path) -> None:
    files = {"ssl": True, "ssl_certificate": "c", "ssl_certificate_key": "k"}
    message = refused(tmp_path, {**files, "port": "8443", "ssl_port": "8443"})
    assert message.startswith("invalid value 8443 for ssl_port (from --ssl-port)")
    assert "must differ from port (8443)" in message


@pytest.mark.parametrize("value", ["0", "65536", "-1", "https", ""])
def test_ssl_port_out_of_range_is_refused(tmp_path: Path, value: str) -> None:
    message = refused(tmp_path, {"ssl_port": value})
    assert f"invalid value {value!r} for ssl_port" in message
    assert "an integer from 1 to 65535" in message


def test_ssl_on_a_unix_socket_needs_an_ssl_port(tmp_path: Path) -> None:
    """TLS on --socket is refused (the proxy in front terminates TLS); with --ssl-port the
    Unix socket stays plain and HTTPS is served on the TCP port."""
    files = {"ssl": True, "ssl_certificate": "c", "ssl_certificate_key": "k"}
    message = refused(tmp_path, {**files, "socket": "/tmp/x.sock"})
    assert message.startswith("invalid value true for ssl (from --ssl)")
    assert "Unix socket" in message and "ssl_port" in message
    config = from_cli(tmp_path, **files, socket="/tmp/x.sock", ssl_port="8443")
    assert config.ssl_port == 8443


# -- the files, checked when the server starts ------------------------------------------


def tls_config(app: Path, cert: Path | str, key: Path | str) -> Config:
    return from_cli(app, ssl=True, ssl_certificate=str(cert), ssl_certificate_key=str(key))


def check_refused(config: Config) -> str:
    with pytest.raises(ConfigError) as info:
        tls.check(config)
    assert info.value.exit_code == 2
    message = str(info.value)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


def test_a_good_pair_gives_a_modern_context(tmp_path: Path) -> None:
    cert, key = make_pair(tmp_path, "a")
    tls.check(tls_config(tmp_path, cert, key))
    context = tls.context_for(tls_config(tmp_path, cert, key))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    assert context.verify_mode == ssl.CERT_NONE  # no client certificates asked for


def test_a_missing_certificate_is_named(tmp_path: Path) -> None:
    _, key = make_pair(tmp_path, "a")
    message = check_refused(tls_config(tmp_path, tmp_path / "nope.crt", key))
    assert message.startswith(
        f"invalid value '{tmp_path / 'nope.crt'}' for ssl_certificate: cannot read it: "
        "No such file or directory (from --ssl-certificate)"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_key_is_named(tmp_path: Path) -> None:
    cert, key = make_pair(tmp_path, "a")
    key.chmod(0)
    message = check_refused(tls_config(tmp_path, cert, key))
    assert message.startswith(f"invalid value '{key}' for ssl_certificate_key: cannot read it")
    assert "Permission denied" in message


def test_a_certificate_that_is_not_pem_is_named(tmp_path: Path) -> None:
    _, key = make_pair(tmp_path, "a")
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate\n")
    message = check_refused(tls_config(tmp_path, junk, key))
    assert message.startswith(f"invalid value '{junk}' for ssl_certificate: it is not a PEM")


def test_a_key_that_is_not_pem_is_named(tmp_path: Path) -> None:
    cert, _ = make_pair(tmp_path, "a")
    junk = tmp_path / "junk.key"
    junk.write_text("not a key\n")
    message = check_refused(tls_config(tmp_path, cert, junk))
    assert message.startswith(f"invalid value '{junk}' for ssl_certificate_key: it is not a PEM")


def test_a_key_of_another_certificate_is_named(tmp_path: Path) -> None:
    cert, _ = make_pair(tmp_path, "a")
    _, other_key = make_pair(tmp_path, "b")
    message = check_refused(tls_config(tmp_path, cert, other_key))
    assert message.startswith(f"invalid value '{other_key}' for ssl_certificate_key")
    assert f"does not belong to the certificate {cert}" in message


def test_a_key_with_a_passphrase_is_refused_without_prompting(tmp_path: Path) -> None:
    """No terminal prompt (a server may have none): a clear error instead."""
    cert, key = make_pair(tmp_path, "a")
    locked = encrypted_key(tmp_path, key)
    message = check_refused(tls_config(tmp_path, cert, locked))
    assert message.startswith(f"invalid value '{locked}' for ssl_certificate_key")
    assert "passphrase" in message


def test_without_ssl_the_files_are_not_read(tmp_path: Path) -> None:
    """ssl off: certificate settings may stay in the file (to switch --ssl on and off)."""
    config = from_cli(tmp_path, ssl_certificate="/nonexistent.crt", ssl_certificate_key="/x")
    tls.check(config)
