"""Property-based tests (issue 7 point 2) for the parsers not covered next to their protocol:
SMTP paths and addresses, the MIME summary the index keeps, and ``ourmail.toml``.  Each either
returns or raises its one documented error, quickly.  (IMAP: tests/imap/test_parser_fuzz.py;
POP3: tests/pop3/test_bad_input.py; DSN parameters: tests/unit/test_dsn.py; MIME structure:
tests/unit/test_mime.py.)"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ourmail.addresses import AddressError, normalise_address
from ourmail.config import ConfigError, load_settings
from ourmail.imap import render
from ourmail.mime.summary import Summary, summarize
from ourmail.smtp.syntax import parse_path

PATHS = st.one_of(
    st.text(max_size=300),
    st.builds(
        lambda kw, inner, params: f"{kw}:<{inner}>{params}",
        st.sampled_from(["FROM", "TO", "from", "To", "X"]),
        st.text(max_size=80),
        st.text(alphabet=" =ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+,;", max_size=60),
    ),
)


@settings(max_examples=500, deadline=None)
@given(PATHS)
def test_smtp_paths_and_addresses(arg: str) -> None:
    try:
        path, params = parse_path(arg, "FROM")
    except ValueError:
        return
    assert len(path) <= 1000 and all(not c.isspace() for c in path)
    assert all(isinstance(k, str) for k in params)
    if path:
        with contextlib.suppress(AddressError):
            normalise_address(path)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([
    b"From: ", b"=?utf-8?q?", b"?=", b"=?x?b?", b"<a@b>", b",", b"\"", b"(", b")", b"\\",
    b"Content-Type: multipart/mixed; boundary=b\r\n", b"--b\r\n", b"\r\n", b"\r\n\r\n",
    b"Subject: ", b"\xff\xfe", b"\x00", b"To: undisclosed-recipients:;", b"Date: 32 Foo",
    b"Content-Transfer-Encoding: base64\r\n", b"message/rfc822", b" ", b"\t",
]), max_size=60))  # fmt: skip
@example([b"From: ", b"=?x?b?", b"=?utf-8?q?", b"=?utf-8?q?"])  # found: a HeaderParseError
def test_the_index_summary_of_any_message(parts: list[bytes]) -> None:
    summary = summarize(b"".join(parts))
    assert Summary.from_record(summary.to_record()) == summary
    assert render.summary_envelope(summary).startswith(b"(")
    assert render.summary_body(summary, extensible=True).startswith(b"(")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "[" + ", ".join(_toml(v) for v in value) + "]"


SCALARS = st.one_of(
    st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=30),
    st.lists(st.sampled_from(["example.org", "x", "", "127.0.0.1:53"]), max_size=3),
)  # fmt: skip
KEYS = st.sampled_from([
    "hostname", "domains", "data", "x", "bytes", "messages", "permanent", "delete", "login_delay",
    "failure_delay", "account_lockout_after", "account_lockout_seconds", "mx_processes",
    "max_line_length", "retry_first", "imap", "certificate", "save_sent", "host", "tls",
])  # fmt: skip
TABLES = st.sampled_from([
    "", "limits", "quota", "pop3", "auth", "smtp", "queue", "queue.relay", "listen", "tls",
    "submission", 'quota.domain."example.org"', 'pop3.domain."x"', "nonsense",
])  # fmt: skip


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.dictionaries(TABLES, st.dictionaries(KEYS, SCALARS, max_size=4), max_size=4))
def test_any_config_file_loads_or_is_a_clear_error(tmp_path: Path, tables: dict) -> None:  # type: ignore[type-arg]
    lines = []
    for table, values in sorted(tables.items()):
        if table:
            lines.append(f"[{table}]")
        lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
    path = tmp_path / "ourmail.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        load_settings(data=str(tmp_path), config=str(path), is_root=False)
    except ConfigError as e:
        assert str(e) and "Traceback" not in str(e)


@pytest.mark.parametrize("text", [b"\xff\xfe", b"[x", b"a = ", b"= 1", b"[[a]]\nb=1"])
def test_broken_toml_is_a_clear_error(tmp_path: Path, text: bytes) -> None:
    path = tmp_path / "ourmail.toml"
    path.write_bytes(text)
    with pytest.raises(ConfigError):
        load_settings(data=str(tmp_path), config=str(path), is_root=False)
