"""Driving the webmail's compose page from tests: log in, post the form (urlencoded, or
multipart with files as a browser without script does), read what arrived over IMAP."""

from __future__ import annotations

import imaplib
import re
import secrets

from conftest import RunningServer, client_tls
from webhelp import Browser, Response


def logged_in(srv: RunningServer, user: str | None = None, password: str | None = None) -> Browser:
    browser = Browser(srv)
    assert browser.login(user or srv.user, password or srv.password).status == 303
    return browser


def post_form(
    browser: Browser, path: str, fields: dict[str, str | list[str]], csrf: str | None = None
) -> Response:
    """The compose form posted as multipart/form-data (as the page posts it)."""
    token = csrf if csrf is not None else browser.get("/compose").csrf()
    body, kind = multipart({"csrf": token, **fields}, {})
    return browser.request("POST", path, body, {"Content-Type": kind})


def multipart(
    fields: dict[str, str | list[str]], files: dict[str, tuple[str, str, bytes]]
) -> tuple[bytes, str]:
    """A multipart/form-data body (RFC 7578) and its Content-Type; ``files``: field name ->
    (file name, content type, content)."""
    boundary = "----ourmailtest" + secrets.token_hex(8)
    out = b""
    for name, value in fields.items():
        for v in value if isinstance(value, list) else [value]:
            out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            out += v.encode("utf-8") + b"\r\n"
    for name, (filename, kind, content) in files.items():
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {kind}\r\n\r\n'
        ).encode()
        out += content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def imap_messages(
    srv: RunningServer, folder: str = "INBOX", user: str | None = None, password: str | None = None
) -> list[tuple[int, bytes, bytes]]:
    """(uid, flags, whole message) of every message in ``folder``, over IMAPS."""
    with imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=client_tls()) as imap:
        imap.login(user or srv.user, password or srv.password)
        imap.select(folder)
        _, data = imap.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
        out = []
        for item in data:
            if isinstance(item, tuple):
                uid = int(re.search(rb"UID (\d+)", item[0]).group(1))  # type: ignore[union-attr]
                flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
                out.append((uid, flags.group(1) if flags else b"", item[1]))
        return out
