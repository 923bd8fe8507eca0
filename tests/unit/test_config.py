"""The settings registry: how each kind of value is read, the errors, precedence and the docs."""

from __future__ import annotations

import ipaddress
import itertools
from pathlib import Path
from typing import Any

import pytest

from ferryman.config import (
    CONFIG_FILE,
    Config,
    Spec,
    env_of,
    flag_of,
    reference_markdown,
    resolve,
    settings,
)
from ferryman.errors import ConfigError

SPECS: dict[str, Spec] = {name: spec for name, spec, _ in settings()}
DEFAULTS: dict[str, Any] = {name: default for name, _, default in settings()}
REPOSITORY = Path(__file__).resolve().parents[2]


def from_cli(app: Path, **cli: Any) -> Config:
    """Resolve with only command-line values (and no environment, no file)."""
    config, _ = resolve(app, cli, {})
    return config


def from_env(app: Path, **env: str) -> Config:
    config, _ = resolve(app, {}, env)
    return config


def from_file(app: Path, toml: str) -> Config:
    (app / CONFIG_FILE).write_text(toml, encoding="utf-8")
    config, _ = resolve(app, {}, {})
    return config


def config_error(app: Path, cli: dict[str, Any], env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        resolve(app, cli, env)
    return info.value


def assert_one_line(message: str) -> None:
    assert message.strip(), "an empty error message"
    assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"


# -- the kinds of values: accepted ------------------------------------------------------

ACCEPTED_TEXT = [
    # (setting, text as typed on the command line or in FERRYMAN_*, value)
    ("port", "0", 0),
    ("port", "80", 80),
    ("port", " 8080 ", 8080),
    ("port", "65535", 65535),
    ("max_pool_size", "1", 1),
    ("max_pool_size", "64", 64),
    ("max_instances", "0", 0),
    ("max_request_queue_size", "0", 0),
    ("thread_count", "10000", 10000),
    ("start_timeout", "90", 90.0),
    ("start_timeout", "0.5", 0.5),
    ("graceful_timeout", " 2.5 ", 2.5),
    ("keepalive_timeout", "1e-3", 0.001),
    ("max_body_size", "1024", 1024),
    ("max_body_size", "512k", 512 * 1024),
    ("max_body_size", "512K", 512 * 1024),
    ("max_body_size", "10m", 10 * 1024**2),
    ("max_body_size", "1g", 1024**3),
    ("max_body_size", "100b", 100),
    ("max_body_size", "2kb", 2 * 1024),
    ("max_body_size", "3mb", 3 * 1024**2),
    ("max_body_size", "1gb", 1024**3),
    ("max_body_size", "0", 0),  # 0 = unlimited
    ("max_header_size", "64k", 64 * 1024),
    ("log_level", "debug", "debug"),
    ("log_level", "WARNING", "warning"),
    ("log_level", " error ", "error"),
    ("app_type", "wsgi", "wsgi"),
    ("address", "0.0.0.0", "0.0.0.0"),
    ("environment", "production", "production"),
]


@pytest.mark.parametrize(("name", "text", "value"), ACCEPTED_TEXT)
def test_text_values_accepted_from_the_command_line(
    tmp_path: Path, name: str, text: str, value: Any
) -> None:
    """A valid value typed on the command line becomes the setting's typed value."""
    config = from_cli(tmp_path, **{name: text})
    assert getattr(config, name) == value
    assert type(getattr(config, name)) is type(value)


@pytest.mark.parametrize(("name", "text", "value"), ACCEPTED_TEXT)
def test_text_values_accepted_from_the_environment(
    tmp_path: Path, name: str, text: str, value: Any
) -> None:
    """The same text in a FERRYMAN_<NAME> variable gives the same value."""
    config = from_env(tmp_path, **{env_of(name): text})
    assert getattr(config, name) == value


ACCEPTED_TOML = [
    # (Ferrymanfile.toml line, setting, value): TOML's own types are understood
    ("port = 8080", "port", 8080),
    ('port = "8080"', "port", 8080),
    ("max_pool_size = 3", "max_pool_size", 3),
    ("start_timeout = 5", "start_timeout", 5.0),
    ("start_timeout = 2.5", "start_timeout", 2.5),
    ("max_body_size = 1024", "max_body_size", 1024),
    ('max_body_size = "10m"', "max_body_size", 10 * 1024**2),
    ("max_body_size = 0", "max_body_size", 0),
    ('log_level = "Debug"', "log_level", "debug"),
    ("access_log = false", "access_log", False),
    ("access_log = true", "access_log", True),
    ('access_log = "off"', "access_log", False),
    ('access_log = "yes"', "access_log", True),
    ("access_log = 0", "access_log", False),
    ("access_log = 1", "access_log", True),
]


@pytest.mark.parametrize(("line", "name", "value"), ACCEPTED_TOML)
def test_toml_values_accepted(tmp_path: Path, line: str, name: str, value: Any) -> None:
    """Ferrymanfile.toml takes TOML integers, floats, booleans and the same text as the CLI."""
    config = from_file(tmp_path, line + "\n")
    assert getattr(config, name) == value
    assert type(getattr(config, name)) is type(value)


BOOLEAN_TEXT = [
    ("true", True),
    ("TRUE", True),
    ("1", True),
    ("yes", True),
    ("on", True),
    (" On ", True),
    ("false", False),
    ("False", False),
    ("0", False),
    ("no", False),
    ("off", False),
]


@pytest.mark.parametrize(("text", "value"), BOOLEAN_TEXT)
def test_boolean_words_in_the_environment(tmp_path: Path, text: str, value: bool) -> None:
    """A boolean setting reads true/false, 1/0, yes/no and on/off in any case."""
    config = from_env(tmp_path, FERRYMAN_ACCESS_LOG=text)
    assert config.access_log is value


@pytest.mark.parametrize("value", [True, False])
def test_boolean_flag_from_the_command_line(tmp_path: Path, value: bool) -> None:
    """--access-log / --no-access-log (argparse gives True or False) set the boolean."""
    assert from_cli(tmp_path, access_log=value).access_log is value


def test_boolean_flag_not_given_overrides_nothing(tmp_path: Path) -> None:
    """A boolean flag that was not given (None from argparse) leaves the lower places' value."""
    assert from_cli(tmp_path, access_log=None).access_log is True
    config, _ = resolve(tmp_path, {"access_log": None}, {"FERRYMAN_ACCESS_LOG": "off"})
    assert config.access_log is False


# -- envvar ------------------------------------------------------------------------------

ENVVAR_CLI = [
    (["A=1"], (("A", "1"),)),
    (["A=1", "B=2"], (("A", "1"), ("B", "2"))),
    (["EMPTY="], (("EMPTY", ""),)),
    (["URL=a=b=c"], (("URL", "a=b=c"),)),
    (["_x9=with spaces"], (("_x9", "with spaces"),)),
]


@pytest.mark.parametrize(("given", "pairs"), ENVVAR_CLI)
def test_envvar_from_repeated_flags(
    tmp_path: Path, given: list[str], pairs: tuple[tuple[str, str], ...]
) -> None:
    """--envvar NAME=VALUE repeats; the value is everything after the first '='."""
    assert from_cli(tmp_path, envvar=given).envvar == pairs


def test_envvar_from_a_toml_table(tmp_path: Path) -> None:
    """In Ferrymanfile.toml envvar is a table; numbers become their text."""
    config = from_file(tmp_path, '[envvar]\nGREETING = "hello world"\nWORKERS = 4\nRATIO = 0.5\n')
    assert config.envvar == (("GREETING", "hello world"), ("WORKERS", "4"), ("RATIO", "0.5"))


def test_envvar_from_the_environment_is_split_like_a_shell(tmp_path: Path) -> None:
    """FERRYMAN_ENVVAR holds several NAME=VALUE words, quoted as in a shell."""
    config = from_env(tmp_path, FERRYMAN_ENVVAR="A=1 'B=two words' C=\"x y\"")
    assert config.envvar == (("A", "1"), ("B", "two words"), ("C", "x y"))


ENVVAR_REFUSED_CLI = [["NOEQUALS"], ["1A=x"], ["A-B=1"], ["=value"], ["A B=1"], ["OK=1", "bad"]]


@pytest.mark.parametrize("given", ENVVAR_REFUSED_CLI)
def test_envvar_refuses_bad_entries(tmp_path: Path, given: list[str]) -> None:
    """An entry without '=' or with a name that is not letters, digits and _ is refused."""
    error = config_error(tmp_path, {"envvar": given}, {})
    assert_one_line(str(error))
    assert "envvar" in str(error) and "--envvar" in str(error)


@pytest.mark.parametrize(
    "toml",
    [
        "[envvar]\nFLAG = true\n",
        "[envvar]\nNESTED = { A = 1 }\n",
        '[envvar]\n"1BAD" = "x"\n',
        'envvar = "A=1"\n',
        "envvar = 5\n",
    ],
)
def test_envvar_refuses_bad_toml(tmp_path: Path, toml: str) -> None:
    """Booleans, tables, bad names and non-tables are refused in Ferrymanfile.toml."""
    (tmp_path / CONFIG_FILE).write_text(toml)
    error = config_error(tmp_path, {}, {})
    assert_one_line(str(error))
    assert "Ferrymanfile.toml key envvar" in str(error)


def test_envvar_with_unbalanced_quotes_in_the_environment(tmp_path: Path) -> None:
    """A FERRYMAN_ENVVAR a shell could not split is an error naming the variable."""
    error = config_error(tmp_path, {}, {"FERRYMAN_ENVVAR": "A='unterminated"})
    assert_one_line(str(error))
    assert "FERRYMAN_ENVVAR" in str(error)
    assert "A='unterminated" in str(error)


# -- trusted_proxies ---------------------------------------------------------------------

LOOPBACKS = ("127.0.0.1/32", "10.0.0.0/8", "::1/128")


@pytest.mark.parametrize(
    "given",
    [
        ["127.0.0.1", "10.0.0.0/8", "::1"],
        ["127.0.0.1,10.0.0.0/8,::1"],
        ["127.0.0.1, 10.0.0.0/8", "::1"],
        ["127.0.0.1 10.0.0.0/8 ::1"],
        ["127.0.0.1", "10.1.2.3/8", "::1"],  # host bits in a CIDR are ignored
    ],
)
def test_trusted_proxies_from_the_command_line(tmp_path: Path, given: list[str]) -> None:
    """Addresses and CIDR networks, comma- or space-separated, in one flag or several."""
    config = from_cli(tmp_path, trusted_proxies=given)
    assert config.trusted_proxies == tuple(ipaddress.ip_network(n) for n in LOOPBACKS)


@pytest.mark.parametrize(
    "text", ["127.0.0.1,10.0.0.0/8,::1", "127.0.0.1, 10.0.0.0/8, ::1", "127.0.0.1 10.0.0.0/8 ::1"]
)
def test_trusted_proxies_from_the_environment(tmp_path: Path, text: str) -> None:
    """FERRYMAN_TRUSTED_PROXIES is a comma- or space-separated list."""
    config = from_env(tmp_path, FERRYMAN_TRUSTED_PROXIES=text)
    assert config.trusted_proxies == tuple(ipaddress.ip_network(n) for n in LOOPBACKS)


@pytest.mark.parametrize(
    "toml",
    [
        'trusted_proxies = ["127.0.0.1", "10.0.0.0/8", "::1"]\n',
        'trusted_proxies = "127.0.0.1, 10.0.0.0/8 ::1"\n',
    ],
)
def test_trusted_proxies_from_toml(tmp_path: Path, toml: str) -> None:
    """Ferrymanfile.toml takes an array of addresses or one string."""
    config = from_file(tmp_path, toml)
    assert config.trusted_proxies == tuple(ipaddress.ip_network(n) for n in LOOPBACKS)


@pytest.mark.parametrize(
    "given", [["bogus"], ["10.0.0.0/33"], ["300.1.1.1"], ["127.0.0.1", "localhost"], ["::1::2"]]
)
def test_trusted_proxies_refuses_non_addresses(tmp_path: Path, given: list[str]) -> None:
    """Host names and malformed addresses or prefixes are refused."""
    error = config_error(tmp_path, {"trusted_proxies": given}, {})
    assert_one_line(str(error))
    assert "trusted_proxies" in str(error)
    assert SPECS["trusted_proxies"].kind.allowed in str(error)


# -- the kinds of values: refused --------------------------------------------------------

REFUSED_TEXT = [
    # (setting, text)
    ("port", "-1"),
    ("port", "65536"),
    ("port", "http"),
    ("port", "80.0"),
    ("port", ""),
    ("port", "8 0"),
    ("max_pool_size", "0"),
    ("max_pool_size", "-3"),
    ("thread_count", "0"),
    ("thread_count", "10001"),
    ("min_instances", "-1"),
    ("start_timeout", "abc"),
    ("start_timeout", "-1"),
    ("start_timeout", "0"),
    ("start_timeout", "nan"),
    ("start_timeout", "inf"),
    ("start_timeout", "-inf"),
    ("start_timeout", ""),
    ("header_timeout", "10s"),
    ("max_header_size", "0"),
    ("max_header_size", "0k"),
    ("max_body_size", "-1"),
    ("max_body_size", "1.5m"),
    ("max_body_size", "10x"),
    ("max_body_size", "1t"),
    ("max_body_size", "k"),
    ("max_body_size", ""),
    ("log_level", "verbose"),
    ("log_level", ""),
    ("app_type", "cobol"),
    ("address", "   "),
    ("access_log", "maybe"),
    ("access_log", "2"),
    ("access_log", ""),
]


# An empty FERRYMAN_<NAME> counts as unset (test_an_empty_environment_variable_counts_as_unset);
# empty values are refused on the command line (below).
@pytest.mark.parametrize(("name", "text"), [(n, t) for n, t in REFUSED_TEXT if t != ""])
def test_refused_values_name_setting_value_rule_and_source(
    tmp_path: Path, name: str, text: str
) -> None:
    """A refused value gives one line: the setting, the value, what is allowed, where from."""
    error = config_error(tmp_path, {}, {env_of(name): text})
    message = str(error)
    assert_one_line(message)
    assert f"for {name} " in message
    assert repr(text) in message
    assert SPECS[name].kind.allowed in message
    assert f"(from {env_of(name)})" in message
    assert error.exit_code == 2


@pytest.mark.parametrize(
    ("name", "text"), [(n, t) for n, t in REFUSED_TEXT if not SPECS[n].kind.boolean]
)
def test_refused_values_on_the_command_line_name_the_flag(
    tmp_path: Path, name: str, text: str
) -> None:
    """The same value given on the command line names the flag it came from."""
    message = str(config_error(tmp_path, {name: text}, {}))
    assert_one_line(message)
    assert f"(from {flag_of(name)})" in message
    assert repr(text) in message


REFUSED_TOML = [
    ("port", "true"),
    ("port", "80.5"),
    ("port", "[80]"),
    ("max_pool_size", "0"),
    ("start_timeout", "false"),
    ("start_timeout", "nan"),
    ("start_timeout", "-2"),
    ("max_body_size", "-1"),
    ("max_body_size", "true"),
    ("max_body_size", "1.5"),
    ("max_header_size", "0"),
    ("log_level", "1"),
    ("access_log", "2"),
    ("access_log", '"maybe"'),
    ("trusted_proxies", "5"),
    ("trusted_proxies", "[1]"),
]


@pytest.mark.parametrize(("name", "toml_value"), REFUSED_TOML)
def test_refused_toml_values_name_the_file_key(tmp_path: Path, name: str, toml_value: str) -> None:
    """A refused value in Ferrymanfile.toml names the file and key it came from."""
    (tmp_path / CONFIG_FILE).write_text(f"{name} = {toml_value}\n")
    error = config_error(tmp_path, {}, {})
    message = str(error)
    assert_one_line(message)
    assert f"for {name} " in message
    assert f"(from Ferrymanfile.toml key {name})" in message
    assert SPECS[name].kind.allowed in message
    assert error.exit_code == 2


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("cli", "--max-pool-size"),
        ("env", "FERRYMAN_MAX_POOL_SIZE"),
        ("file", "Ferrymanfile.toml key max_pool_size"),
    ],
)
def test_error_message_example(tmp_path: Path, source: str, expected: str) -> None:
    """max_pool_size '0' is refused with the same sentence wherever it was given."""
    cli = {"max_pool_size": "0"} if source == "cli" else {}
    env = {"FERRYMAN_MAX_POOL_SIZE": "0"} if source == "env" else {}
    if source == "file":
        (tmp_path / CONFIG_FILE).write_text('max_pool_size = "0"\n')
    error = config_error(tmp_path, cli, env)
    assert str(error) == (
        f"invalid value '0' for max_pool_size (from {expected}): must be an integer >= 1"
    )
    assert error.exit_code == 2


# -- Ferrymanfile.toml as a whole --------------------------------------------------------


@pytest.mark.parametrize(
    "toml", ["port = \n", "port = 80\nport = 81\n", "[unclosed\n", 'address = "a\nb"\n']
)
def test_toml_syntax_error_is_one_line(tmp_path: Path, toml: str) -> None:
    """Invalid TOML stops the start with one line naming the file."""
    (tmp_path / CONFIG_FILE).write_text(toml)
    error = config_error(tmp_path, {}, {})
    assert_one_line(str(error))
    assert CONFIG_FILE in str(error) and "invalid TOML" in str(error)
    assert error.exit_code == 2


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("max_pool_sise", "max_pool_size"),
        ("max-pool-size", "max_pool_size"),
        ("loglevel", "log_level"),
        ("trusted_proxy", "trusted_proxies"),
    ],
)
def test_unknown_toml_key_suggests_the_nearest_setting(
    tmp_path: Path, key: str, suggestion: str
) -> None:
    """A misspelt key is an error in one line that names it and suggests the setting meant."""
    (tmp_path / CONFIG_FILE).write_text(f'"{key}" = 3\n')
    error = config_error(tmp_path, {}, {})
    message = str(error)
    assert_one_line(message)
    assert CONFIG_FILE in message
    assert repr(key) in message
    assert f"did you mean {suggestion!r}?" in message
    assert error.exit_code == 2


def test_unknown_toml_key_without_a_near_setting(tmp_path: Path) -> None:
    """A key like no setting is refused without a suggestion."""
    (tmp_path / CONFIG_FILE).write_text("zzzzzz = 3\n")
    message = str(config_error(tmp_path, {}, {}))
    assert_one_line(message)
    assert "'zzzzzz'" in message and "did you mean" not in message


def test_unreadable_config_file_is_one_line(tmp_path: Path) -> None:
    """A Ferrymanfile.toml that cannot be read (here a directory) gives one line."""
    (tmp_path / CONFIG_FILE).mkdir()
    error = config_error(tmp_path, {}, {})
    assert_one_line(str(error))
    assert CONFIG_FILE in str(error)


def test_missing_app_directory_is_one_line(tmp_path: Path) -> None:
    """An app directory that does not exist is a configuration error."""
    error = config_error(tmp_path / "nope", {}, {})
    assert_one_line(str(error))
    assert "nope" in str(error)
    assert error.exit_code == 2


# -- rules across settings ---------------------------------------------------------------

TOGETHER_OK = [
    {"min_instances": "0", "max_pool_size": "1"},
    {"min_instances": "3", "max_pool_size": "3"},
    {"min_instances": "2", "max_instances": "2"},
    {"min_instances": "2", "max_instances": "0"},
    {"min_instances": "0", "max_instances": "1"},
]


@pytest.mark.parametrize("cli", TOGETHER_OK)
def test_settings_that_agree_are_accepted(tmp_path: Path, cli: dict[str, str]) -> None:
    """min_instances up to max_pool_size, and max_instances 0 or >= min_instances, are fine."""
    config = from_cli(tmp_path, **cli)
    for name, text in cli.items():
        assert getattr(config, name) == int(text)


TOGETHER_REFUSED = [
    # (cli, the setting blamed, its value, the other setting named)
    ({"min_instances": "7"}, "min_instances", "7", "max_pool_size"),
    ({"min_instances": "4", "max_pool_size": "3"}, "min_instances", "4", "max_pool_size"),
    ({"min_instances": "3", "max_instances": "2"}, "max_instances", "2", "min_instances"),
]


@pytest.mark.parametrize(("cli", "blamed", "value", "other"), TOGETHER_REFUSED)
def test_settings_that_disagree_are_refused(
    tmp_path: Path, cli: dict[str, str], blamed: str, value: str, other: str
) -> None:
    """min_instances above max_pool_size, or max_instances below min_instances, is one line."""
    error = config_error(tmp_path, cli, {})
    message = str(error)
    assert_one_line(message)
    assert f"invalid value {value} for {blamed}" in message
    assert other in message
    assert error.exit_code == 2


def test_rules_across_settings_apply_across_sources(tmp_path: Path) -> None:
    """A min_instances from the file is checked against a max_pool_size from the CLI."""
    (tmp_path / CONFIG_FILE).write_text("min_instances = 4\n")
    error = config_error(tmp_path, {"max_pool_size": "2"}, {})
    assert "min_instances" in str(error) and "max_pool_size (2)" in str(error)


# -- precedence --------------------------------------------------------------------------

PLACES = ("file", "env", "cli")


@pytest.mark.parametrize(
    "given", [combo for n in range(4) for combo in itertools.combinations(PLACES, n)]
)
def test_precedence_defaults_file_environment_cli(tmp_path: Path, given: tuple[str, ...]) -> None:
    """The value from the highest place wins: defaults < Ferrymanfile.toml < FERRYMAN_* < CLI."""
    values = {"file": 11, "env": 22, "cli": 33}
    if "file" in given:
        (tmp_path / CONFIG_FILE).write_text(f"max_pool_size = {values['file']}\n")
    env = {"FERRYMAN_MAX_POOL_SIZE": str(values["env"])} if "env" in given else {}
    cli = {"max_pool_size": str(values["cli"])} if "cli" in given else {}
    config, _ = resolve(tmp_path, cli, env)
    winner = max(given, key=PLACES.index) if given else None
    expected = values[winner] if winner else DEFAULTS["max_pool_size"]
    assert config.max_pool_size == expected


def test_settings_from_different_places_combine(tmp_path: Path) -> None:
    """Each place sets its own settings; a higher place only overrides what it gives."""
    (tmp_path / CONFIG_FILE).write_text('port = 4000\nlog_level = "debug"\nmax_pool_size = 2\n')
    config, _ = resolve(
        tmp_path, {"port": "5000", "log_level": None}, {"FERRYMAN_LOG_LEVEL": "error"}
    )
    assert (config.port, config.log_level, config.max_pool_size) == (5000, "error", 2)
    assert config.start_timeout == DEFAULTS["start_timeout"]


def test_boolean_precedence(tmp_path: Path) -> None:
    """--no-access-log beats FERRYMAN_ACCESS_LOG=on, which beats access_log = false."""
    (tmp_path / CONFIG_FILE).write_text("access_log = false\n")
    env = {"FERRYMAN_ACCESS_LOG": "on"}
    assert resolve(tmp_path, {}, env)[0].access_log is True
    assert resolve(tmp_path, {"access_log": False}, env)[0].access_log is False


def test_defaults(tmp_path: Path) -> None:
    """With nothing given, every setting has its declared default."""
    config, warnings = resolve(tmp_path, {}, {})
    for name, default in DEFAULTS.items():
        assert getattr(config, name) == default, name
    assert warnings == []
    assert config.app_dir == tmp_path.resolve()


# -- the environment ---------------------------------------------------------------------


def test_unknown_ferryman_variables_are_warnings(tmp_path: Path) -> None:
    """An unknown FERRYMAN_* variable gives a warning naming it, not an error."""
    env = {
        "FERRYMAN_PORTT": "not even a number",
        "FERRYMAN_MAX_POOL_SIZE": "3",
        "FERRYMAN_APP_DIR": "/elsewhere",
        "PATH": "/usr/bin",
        "PORT": "bogus",
    }
    config, warnings = resolve(tmp_path, {}, env)
    assert config.max_pool_size == 3
    assert len(warnings) == 2
    assert "FERRYMAN_APP_DIR" in warnings[0]
    assert "FERRYMAN_PORTT" in warnings[1]
    for warning in warnings:
        assert_one_line(warning)


def test_variables_without_the_prefix_are_ignored(tmp_path: Path) -> None:
    """Variables not starting with FERRYMAN_ neither set anything nor warn."""
    config, warnings = resolve(tmp_path, {}, {"PORT": "1", "MAX_POOL_SIZE": "0", "ferryman": "x"})
    assert warnings == []
    assert config.port == DEFAULTS["port"]


# -- the reference -----------------------------------------------------------------------


def setting_section(markdown: str, name: str) -> str:
    """The part of the reference about one setting, up to the next heading."""
    start = markdown.index(f"### `{name}`\n")
    end = markdown.find("\n#", start)
    return markdown[start:] if end < 0 else markdown[start:end]


@pytest.mark.parametrize("name", list(SPECS))
def test_reference_lists_every_setting(name: str) -> None:
    """Each setting has a section with its flag, variable, file key, rule and default."""
    section = setting_section(reference_markdown(), name)
    spec = SPECS[name]
    cli_line = next(line for line in section.splitlines() if line.startswith("* CLI: "))
    assert f"`{flag_of(name)}`" in cli_line
    if spec.short:
        assert f"`{spec.short}`" in cli_line
    assert f"* Environment: `{env_of(name)}`" in section
    assert f"* {CONFIG_FILE}: `{name}`" in section
    assert f"* Allowed: {spec.kind.allowed}" in section
    assert spec.help in section
    assert "* Default: " in section


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("port", "3000"),
        ("address", "127.0.0.1"),
        ("socket", "(none)"),
        ("python", "the interpreter Ferryman runs on"),
        ("envvar", "(none)"),
        ("start_timeout", "90"),
        ("max_pool_size", "6"),
        ("max_body_size", "1073741824"),
        ("keepalive_timeout", "5"),
        ("trusted_proxies", "(none)"),
        ("log_level", "info"),
        ("access_log", "true"),
    ],
)
def test_reference_shows_defaults(name: str, shown: str) -> None:
    """Defaults are shown as a user would write them."""
    assert f"* Default: {shown}\n" in setting_section(reference_markdown(), name)


def test_reference_flags_of_booleans_and_lists() -> None:
    """Booleans show their --no- form, lists say they repeat, short flags are shown."""
    markdown = reference_markdown()
    assert "* CLI: `--access-log` / `--no-access-log`" in setting_section(markdown, "access_log")
    assert "* CLI: `--envvar` (repeatable)" in setting_section(markdown, "envvar")
    assert "* CLI: `-p`, `--port`\n" in setting_section(markdown, "port")


def test_reference_has_one_section_per_setting() -> None:
    """No setting is missing from the reference and none is listed twice."""
    headings = [line for line in reference_markdown().splitlines() if line.startswith("### ")]
    assert headings == [f"### `{name}`" for name in SPECS]


def test_docs_configuration_md_is_up_to_date() -> None:
    """docs/configuration.md is exactly what `ferryman settings --markdown` prints."""
    path = REPOSITORY / "docs" / "configuration.md"
    assert path.exists(), "run: ferryman settings --markdown > docs/configuration.md"
    assert path.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/configuration.md is stale; run: ferryman settings --markdown > docs/configuration.md"
    )


def test_a_mistyped_environment_variable_gets_a_suggestion(tmp_path: Path) -> None:
    """FERRYMAN_PROT is not a setting: the warning suggests FERRYMAN_PORT."""
    _, warnings = resolve(tmp_path, {}, {"FERRYMAN_PROT": "8000"})
    assert warnings == [
        "ignoring unknown environment variable FERRYMAN_PROT (did you mean FERRYMAN_PORT?)"
    ]


def test_an_empty_environment_variable_counts_as_unset(tmp_path: Path) -> None:
    config, _ = resolve(tmp_path, {}, {"FERRYMAN_PORT": ""})
    assert config.port == 3000


def test_a_bad_envvar_table_entry_is_named(tmp_path: Path) -> None:
    """In an [envvar] table, the entry that is not a string is the one the error shows."""
    (tmp_path / "Ferrymanfile.toml").write_text('[envvar]\nGOOD = "yes"\nBAD = true\n')
    with pytest.raises(ConfigError, match=r"BAD = True"):
        resolve(tmp_path, {}, {})


def test_ferryman_variables_that_are_not_settings_are_left_alone() -> None:
    """FERRYMAN_BUILD (pip install's build choice) and the fuzz target's knobs may be in
    the environment of a running server: no warning for them; a typo still gets one."""
    from ferryman.config import read_environment

    values, unknown = read_environment(
        {"FERRYMAN_BUILD": "pure", "FERRYMAN_FUZZ_SEED": "1", "FERRYMAN_PROT": "1"}
    )
    assert values == {}
    assert unknown == ["FERRYMAN_PROT (did you mean FERRYMAN_PORT?)"]


def test_relative_file_paths_in_the_file_are_relative_to_its_directory(tmp_path: Path) -> None:
    """In Ferrymanfile.toml, cert.pem is the app directory's; on the command line, the
    current directory's (as any command's argument)."""
    (tmp_path / "Ferrymanfile.toml").write_text(
        'ssl_certificate = "cert.pem"\nlog_file = "log/ferryman.log"\n'
        'pid_file = "/run/ferryman.pid"\n'
    )
    config, _ = resolve(tmp_path, {}, {})
    assert config.ssl_certificate == str(tmp_path.resolve() / "cert.pem")
    assert config.log_file == str(tmp_path.resolve() / "log" / "ferryman.log")
    assert config.pid_file == "/run/ferryman.pid"
    config, _ = resolve(tmp_path, {"ssl_certificate": "other.pem"}, {})
    assert config.ssl_certificate == "other.pem"


@pytest.mark.parametrize(
    ("source", "given"),
    [
        ("cli", ["/upload", "/api/import/"]),
        ("cli", ["/upload, /api/import"]),
        ("env", "/upload /api/import"),
        ("toml", 'unbuffered_request_path = ["/upload", "/api//import"]\n'),
    ],
)
def test_unbuffered_request_paths_are_url_paths(
    tmp_path: Path, source: str, given: list[str] | str
) -> None:
    """Paths in one flag or several, a list in the environment or the file; normalised as
    mount prefixes are (no trailing or doubled slashes)."""
    if source == "cli":
        config = from_cli(tmp_path, unbuffered_request_path=given)
    elif source == "env":
        config = from_env(tmp_path, FERRYMAN_UNBUFFERED_REQUEST_PATH=str(given))
    else:
        config = from_file(tmp_path, str(given))
    assert config.unbuffered_request_path == ("/upload", "/api/import")


@pytest.mark.parametrize("given", [["upload"], ["/a/../b"], ["/up load?x"], ["/%2F"]])
def test_unbuffered_request_paths_refuse_what_is_not_a_path(
    tmp_path: Path, given: list[str]
) -> None:
    error = config_error(tmp_path, {"unbuffered_request_path": given}, {})
    assert_one_line(str(error))
    assert "unbuffered_request_path" in str(error)
    assert SPECS["unbuffered_request_path"].kind.allowed in str(error)
