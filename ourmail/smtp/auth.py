"""The SASL steps of SMTP ``AUTH`` (RFC 4954 §4): PLAIN (RFC 4616) and LOGIN.

A state machine without I/O: the session feeds it the command's initial response and each
continuation line, and gets back a :class:`Challenge` to send as ``334``, the
:class:`Credentials` to check, or a :class:`Failed` reply.  Decoding lives in
``ourmail.auth.sasl``; checking the credentials is the session's (through the portal).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from ourmail.auth.sasl import decode_base64, decode_plain

#: What EHLO advertises (RFC 4954 §3).
MECHANISMS = "PLAIN LOGIN"


@attrs.frozen
class Challenge:
    """Send ``334 <text>`` (base64) and feed the client's next line back."""

    text: str


@attrs.frozen
class Credentials:
    """The client's user name and password, to be checked."""

    username: str
    password: str


@attrs.frozen
class Failed:
    """The exchange ends with this reply."""

    code: int
    text: str


Step = Challenge | Credentials | Failed
_CANCELLED = Failed(501, "5.7.0 Authentication cancelled")  # RFC 4954 §4: the client sent "*"
_INVALID = Failed(535, "5.7.8 Authentication credentials invalid")


class SASLExchange:
    """One ``AUTH`` command's exchange."""

    def __init__(self) -> None:
        self._next: Callable[[str], Step] | None = None

    def start(self, mechanism: str, initial: str) -> Step:
        """``AUTH <mechanism> [<initial response>]``."""
        mechanism = mechanism.upper()
        if mechanism == "PLAIN":
            return self._plain(initial) if initial else self._ask("", self._plain)
        if mechanism == "LOGIN":
            if initial:
                return self._login_user(initial)
            return self._ask("VXNlcm5hbWU6", self._login_user)  # "Username:"
        return Failed(504, "5.5.4 Unrecognized authentication type")

    def respond(self, line: str) -> Step:
        """The client's answer to the last :class:`Challenge`."""
        step, self._next = self._next, None
        assert step is not None
        return step(line)

    def _ask(self, text: str, then: Callable[[str], Step]) -> Challenge:
        self._next = then
        return Challenge(text)

    def _plain(self, text: str) -> Step:
        if text == "*":
            return _CANCELLED
        plain = decode_plain(text)
        if plain is None:
            return Failed(501, "5.5.2 Cannot decode the PLAIN response")
        if plain.for_someone_else:
            return _INVALID
        return Credentials(plain.authcid, plain.password)

    def _login_user(self, text: str) -> Step:
        username = None if text == "*" else decode_base64(text)
        if username is None:
            return Failed(501, "5.5.2 Cannot decode the LOGIN response")
        return self._ask("UGFzc3dvcmQ6", lambda t: self._login_password(username, t))  # "Password:"

    def _login_password(self, username: str, text: str) -> Step:
        password = None if text == "*" else decode_base64(text)
        if password is None:
            return Failed(501, "5.5.2 Cannot decode the LOGIN response")
        return Credentials(username, password)
