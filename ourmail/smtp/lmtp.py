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

    def replies_after_data(self) -> int:
        return len(self.recipients)  # RFC 2033 §4.2

    def do_not_lmtp(self, arg: str) -> None:
        self.error(500, "5.5.1 This is LMTP: say LHLO")

    #: Replies owed at the end of DATA/BDAT: one per accepted recipient (RFC 2033 §4.2).
    _owed = 0

    def _finish_data(self) -> None:
        self._owed = len(self.recipients)
        super()._finish_data()

    def _answer_all(self, code: int, text: str) -> None:
        """The same reply for every recipient the message had (at least one)."""
        owed, self._owed = max(self._owed, 1), 0
        for _ in range(owed):
            self.reply(code, text)

    def refuse_message(self, code: int, text: str) -> None:
        # RFC 2033 §4.2: a refusal of the message is every recipient's reply; the client
        # waits for as many as it gave recipients, so one alone would hang it.
        self._reset()
        self._answer_all(code, text)
        if code >= 500:
            self.count_error()

    def internal_error(self) -> None:
        self._answer_all(451, "4.3.0 Internal error, try again later")

    def report(self, results: list[DeliveryResult]) -> None:
        self._owed = 0
        if any(r.ok for r in results):
            self.ctx.metrics.accepted("lmtp")
        else:  # every recipient failed: refused, as SMTP counts a failed delivery
            self.count_refusal("other")
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
