"""LMTP (RFC 2033): how another MTA on this machine (Postfix, Exim) hands mail to ourmail.

The same session as SMTP with three differences: the client says LHLO (HELO and EHLO are
refused), there is no STARTTLS or AUTH (the listener is a local unix socket, by default
``<data>/lmtp.sock``), and after DATA every accepted recipient gets its own reply, in RCPT
order, so one full or unavailable mailbox does not hold back the others (RFC 2033 §4.2).
"""

from __future__ import annotations

from ourmail.interfaces import DeliveryResult
from ourmail.smtp.server import SMTPServer


class LMTPServer(SMTPServer):
    """One LMTP session."""

    protocol_name = "LMTP"

    def listener_name(self) -> str:
        return "lmtp"

    def extensions(self) -> list[str]:
        return [
            "PIPELINING",  # RFC 2920
            f"SIZE {self.ctx.limits.max_message_size}",  # RFC 1870
            "8BITMIME",  # RFC 6152
            "ENHANCEDSTATUSCODES",  # RFC 2034
            "CHUNKING",  # RFC 3030
        ]

    def do_LHLO(self, arg: str) -> None:
        self.do_EHLO(arg)

    def do_not_lmtp(self, arg: str) -> None:
        self.error(500, "5.5.1 This is LMTP: say LHLO")

    def report(self, results: list[DeliveryResult]) -> None:
        for r in results:  # RFC 2033 §4.2: one reply per recipient, in RCPT order
            if r.ok:
                self.reply(250, f"2.1.5 <{r.address}> delivered as {self.queue_id}")
            else:
                self.reply(r.code, f"{r.status} <{r.address}> {r.text}")

    COMMANDS = {
        **{k: v for k, v in SMTPServer.COMMANDS.items() if k not in ("STARTTLS", "AUTH")},
        "LHLO": do_LHLO,
        "HELO": do_not_lmtp,
        "EHLO": do_not_lmtp,
    }
