"""The arguments of ``MAIL`` and ``RCPT``: the path (RFC 5321 §4.1.2) and the parameters of the
extensions the server offers (SIZE, BODY, SMTPUTF8, AUTH, DSN).

Each function checks syntax only and raises :class:`BadArgument` with the reply to send; what
the session does with a good argument (who may send, where a recipient goes) is not its job.
"""

from __future__ import annotations

import re

import attrs

from ourmail import dsnparams

_PATH_RE = re.compile(r"^(?P<kw>FROM|TO):\s*<(?P<path>[^<>]*)>(?P<params>.*)$", re.I)
MAX_PATH = 256  # RFC 5321 §4.5.3.1.3
Params = dict[str, str | None]


class BadArgument(Exception):
    """The argument is refused with this reply."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


@attrs.frozen
class MailOptions:
    """What the parameters of ``MAIL FROM`` ask for."""

    size: int  # declared with SIZE= (RFC 1870), 0 when not
    utf8: bool  # SMTPUTF8 (RFC 6531)
    dsn: dsnparams.MailParams  # RET= and ENVID= (RFC 3461)


def parse_path(arg: str, keyword: str) -> tuple[str, Params]:
    """``FROM:<a@b> SIZE=10`` -> ("a@b", {"SIZE": "10"}); ValueError on bad syntax.

    A source route (``<@relay:user@domain>``) is dropped, as RFC 5321 §4.1.1.3 allows.
    """
    m = _PATH_RE.match(arg.strip())
    if not m or m.group("kw").upper() != keyword:
        raise ValueError(arg)
    path = m.group("path").strip()
    if path.startswith("@"):
        path = path.partition(":")[2]
    if len(path) > MAX_PATH or any(c.isspace() or ord(c) < 32 for c in path):
        raise ValueError(arg)
    params: Params = {}
    for item in m.group("params").split():
        key, eq, value = item.partition("=")
        params[key.upper()] = value if eq else None
    return path, params


def mail_options(path: str, params: Params, max_size: int) -> MailOptions:
    """Check the parameters of ``MAIL FROM:<path>``."""
    size = 0
    for key, value in params.items():
        if key == "SIZE":
            if value is None or not value.isdigit():
                raise BadArgument(501, "5.5.4 SIZE needs a number")
            if int(value) > max_size:
                raise BadArgument(552, "5.3.4 Message size exceeds fixed maximum message size")
            size = int(value)
        elif key == "BODY":
            if (value or "").upper() not in ("7BIT", "8BITMIME"):
                raise BadArgument(501, "5.5.4 BODY must be 7BIT or 8BITMIME")
        elif key == "SMTPUTF8":  # RFC 6531 §3.4
            if value is not None:
                raise BadArgument(501, "5.5.4 SMTPUTF8 takes no value")
        elif key not in ("AUTH", "RET", "ENVID"):  # RFC 4954 §5: AUTH= may be ignored
            raise BadArgument(555, f"5.5.4 Unsupported parameter {key}")
    try:
        dsn = dsnparams.parse_mail_params(params.get("RET"), params.get("ENVID"))
    except dsnparams.DSNParamError as e:
        raise BadArgument(501, str(e)) from None
    utf8 = "SMTPUTF8" in params
    if not utf8 and not path.isascii():
        raise BadArgument(553, "5.6.7 Non-ASCII address without SMTPUTF8")  # RFC 6531 §3.7.4.1
    return MailOptions(size, utf8, dsn)


def rcpt_options(path: str, params: Params, utf8: bool) -> dsnparams.RcptParams:
    """Check the parameters of ``RCPT TO:<path>`` in a transaction with or without SMTPUTF8."""
    unknown = [k for k in params if k not in ("NOTIFY", "ORCPT")]
    if unknown:
        raise BadArgument(555, f"5.5.4 Unsupported parameter {unknown[0]}")
    try:
        rcpt = dsnparams.parse_rcpt_params(params.get("NOTIFY"), params.get("ORCPT"))
    except dsnparams.DSNParamError as e:
        raise BadArgument(501, str(e)) from None
    if not utf8 and not path.isascii():
        raise BadArgument(553, f"5.6.7 <{path}>: Non-ASCII address without SMTPUTF8")
    return rcpt
