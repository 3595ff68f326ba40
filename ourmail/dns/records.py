"""The records a mail domain publishes so that mail reaches this server, its mail is
trusted, and clients find it (docs/dns.md).  Pure functions of a :class:`MailSetup`.

Every record says what it is for (``purpose``), shown as a comment in the zone snippet and
beside each check result.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping

import attrs

#: The RFC 8461 §3.2 ``max_age`` of the policy served at ``mta-sts.<domain>`` (seconds); the
#: same as ``ourmail.web.clientconfig.ClientSetup``'s (a test keeps them equal).
MTA_STS_MAX_AGE = 7 * 86400

#: (service, SRV label, implicit TLS?) for RFC 6186 and RFC 8314 §5.1, in the order listed.
SRV_SERVICES = (
    ("submissions", "_submissions._tcp", True),
    ("submission", "_submission._tcp", False),
    ("imaps", "_imaps._tcp", True),
    ("imap", "_imap._tcp", False),
    ("pop3s", "_pop3s._tcp", True),
    ("pop3", "_pop3._tcp", False),
)
#: SRV priorities: implicit TLS first (RFC 8314 §5.1: preferred to STARTTLS).
IMPLICIT_PRIORITY = 0
STARTTLS_PRIORITY = 10
#: RFC 1035 §3.3.14: a TXT record is strings of at most 255 bytes each.
TXT_CHUNK = 255


@attrs.frozen
class DkimPublic:
    """One DKIM key that signs for the domain: its selector and record text."""

    selector: str
    #: ``rsa`` or ``ed25519``.
    algorithm: str
    #: The ``p=`` tag: the public key in base64 (RFC 6376 §3.6.1).
    public: str

    @property
    def text(self) -> str:
        """The key record's text (RFC 6376 §3.6.1)."""
        return f"v=DKIM1; k={self.algorithm}; p={self.public}"


@attrs.frozen
class MailSetup:
    """What the records of one domain are computed from."""

    #: The mail domain (A-labels, lower case, no final dot).
    domain: str
    #: The server's host name: the MX target and what clients connect to.
    hostname: str
    #: Listener name (``smtp``, ``imaps``, ``web``...) -> its public port; a service not
    #: here is off.
    ports: Mapping[str, int]
    #: The active DKIM keys of the domain.
    dkim: tuple[DkimPublic, ...] = ()
    #: ``[web] mta_sts_mode``: ``testing``, ``enforce`` or ``none``.
    mta_sts_mode: str = "testing"
    #: The addresses the host name has now (shown as a hint; ourmail cannot know its public
    #: address behind NAT); empty: a placeholder is shown.
    addresses: tuple[str, ...] = ()
    #: The addresses of this machine's own interfaces (normalised, as ``ipaddress`` writes
    #: them): the host name's address passes its check only when it is one of them.
    own_addresses: frozenset[str] = frozenset()
    #: ``[queue] relay``'s host name: all outbound mail leaves through that smart host (empty:
    #: this server delivers to each MX itself).
    relay: str = ""

    @property
    def report_address(self) -> str:
        """Where DMARC and TLS-RPT reports go: the postmaster, which every domain has
        (RFC 5321 §4.5.1)."""
        return f"postmaster@{self.domain}"

    @property
    def mta_sts_id(self) -> str:
        """The ``id`` of the ``_mta-sts`` record: a digest of the policy served, so it changes
        exactly when the policy does (RFC 8461 §3.1: 1 to 32 letters and digits)."""
        return policy_id(mta_sts_policy_text(self.mta_sts_mode, self.hostname))


def mta_sts_policy_text(mode: str, hostname: str, max_age: int = MTA_STS_MAX_AGE) -> bytes:
    """The RFC 8461 §3.2 policy as ``ourmail/web/clientconfig.py`` serves it."""
    lines = ["version: STSv1", f"mode: {mode}", f"mx: {hostname}", f"max_age: {max_age}"]
    return "".join(line + "\r\n" for line in lines).encode("ascii")


def policy_id(policy: bytes) -> str:
    """RFC 8461 §3.1 ``id`` for ``policy``: 20 hex digits of its SHA-256."""
    return hashlib.sha256(policy).hexdigest()[:20]


@attrs.frozen
class Record:
    """One record to publish, and how to check it."""

    #: Owner name, absolute, without the final dot.
    name: str
    #: ``MX``, ``A``, ``AAAA``, ``PTR``, ``TXT``, ``SRV`` or ``CNAME``.
    type: str
    #: What the check looks at: ``mx``, ``address``, ``spf``, ``dkim``, ``dmarc``,
    #: ``mta-sts``, ``tls-rpt``, ``srv``, ``alias``, ``ptr``.
    kind: str
    #: What it is for (one line).
    purpose: str
    #: The target host (MX, SRV, CNAME, PTR; ``.`` for a service that is off), without the
    #: final dot.
    target: str = ""
    #: MX preference or SRV priority.
    priority: int = 0
    weight: int = 0
    port: int = 0
    #: TXT: the whole text (split into strings of at most 255 bytes when published).
    text: str = ""
    #: A and AAAA: the address (empty for a placeholder, commented out in the zone); PTR: the
    #: address whose reverse name it is.
    address: str = ""
    #: Missing is a failure (else a warning: the record is recommended, not needed).
    required: bool = True
    #: DKIM: the ``p=`` value expected.
    key: str = ""

    def strings(self) -> list[str]:
        """TXT: the text cut into strings of at most 255 bytes (RFC 7208 §3.3, RFC 6376
        §3.6.2.2: receivers join them without spaces).  The texts here are ASCII."""
        return [self.text[i : i + TXT_CHUNK] for i in range(0, len(self.text), TXT_CHUNK)]

    def rdata(self) -> str:
        """The record's data as a zone file writes it (names absolute)."""
        if self.type == "MX":
            return f"{self.priority} {self.target}."
        if self.type == "SRV":
            target = "." if self.target == "." else f"{self.target}."
            return f"{self.priority} {self.weight} {self.port} {target}"
        if self.type in ("CNAME", "PTR"):
            return f"{self.target}."
        if self.type == "TXT":
            return " ".join(_quoted(s) for s in self.strings())
        return self.address or ("192.0.2.1" if self.type == "A" else "2001:db8::1")

    def value(self) -> str:
        """The value in one line (for reports and the admin page)."""
        return self.text if self.type == "TXT" else self.rdata()


def _quoted(text: str) -> str:
    """A zone-file character string (RFC 1035 §5.1: ``"`` and ``\\`` escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def expected_records(setup: MailSetup) -> list[Record]:
    """Every record ``setup.domain`` should publish, in the order to publish them."""
    domain, host = setup.domain, setup.hostname
    records = [
        Record(
            domain,
            "MX",
            "mx",
            f"mail for {domain} is delivered to {host} (RFC 5321 §5.1)",
            target=host,
            priority=10,
        ),
        *_addresses(setup),
        _spf(setup),
        *(
            Record(
                f"{key.selector}._domainkey.{domain}",
                "TXT",
                "dkim",
                f"DKIM key {key.selector} ({key.algorithm}): receivers check our signatures "
                "with it (RFC 6376)",
                text=key.text,
                key=key.public,
            )
            for key in setup.dkim
        ),
        Record(
            f"_dmarc.{domain}",
            "TXT",
            "dmarc",
            "DMARC: p=none only asks for reports at first; raise to quarantine, then reject, "
            "once they show all your mail passes SPF or DKIM (RFC 7489)",
            text=f"v=DMARC1; p=none; rua=mailto:{setup.report_address}",
        ),
    ]
    if "web" in setup.ports:  # the web listener serves the policy
        records += _mta_sts(setup)
    records.append(
        Record(
            f"_smtp._tls.{domain}",
            "TXT",
            "tls-rpt",
            "TLS-RPT: senders report TLS failures to the postmaster (RFC 8460 §3)",
            text=f"v=TLSRPTv1; rua=mailto:{setup.report_address}",
            required=False,
        )
    )
    return records + _service_records(setup)


def _spf(setup: MailSetup) -> Record:
    """RFC 7208 SPF: the MX hosts; with a smart host, its address too (a placeholder), and
    ``~all`` (softfail, §8.5) until the admin has put in what its provider publishes."""
    domain, host, relay = setup.domain, setup.hostname, setup.relay
    if not relay:
        return Record(
            domain,
            "TXT",
            "spf",
            f"SPF: only the MX hosts ({host}) send mail from {domain} (RFC 7208)",
            text="v=spf1 mx -all",
        )
    return Record(
        domain,
        "TXT",
        "spf",
        f"SPF: mail from {domain} leaves through the smart host {relay} ([queue] relay); "
        f"replace a:{relay} with the include: its provider documents, and ~all with -all "
        "once reports show all mail passes (RFC 7208 §5.2, §8.5)",
        text=f"v=spf1 mx a:{relay} ~all",
    )


def _mta_sts(setup: MailSetup) -> list[Record]:
    domain, host = setup.domain, setup.hostname
    return [
        Record(
            f"_mta-sts.{domain}",
            "TXT",
            "mta-sts",
            f"MTA-STS: senders fetch the policy ({setup.mta_sts_mode}) and then insist on TLS "
            "to the MX; change the id whenever the policy changes (RFC 8461 §3.1)",
            text=f"v=STSv1; id={setup.mta_sts_id}",
            required=False,
        ),
        Record(
            f"mta-sts.{domain}",
            "CNAME",
            "alias",
            "the host serving the MTA-STS policy (RFC 8461 §3.3)",
            target=host,
            required=False,
        ),
    ]


def _addresses(setup: MailSetup) -> list[Record]:
    purpose = f"the address of {setup.hostname}: the MX and clients connect to it"
    found = [
        Record(
            setup.hostname,
            "AAAA" if ":" in a else "A",
            "address",
            f"{purpose} (as it resolves now: check it is the public address)",
            address=a,
        )
        for a in setup.addresses
    ]
    reverse = [
        Record(
            ipaddress.ip_address(a).reverse_pointer,
            "PTR",
            "ptr",
            f"reverse DNS: {a} names {setup.hostname}; many receivers refuse mail from an "
            "address without it (RFC 1912 §2.1). Ask whoever gave you the address to set it",
            target=setup.hostname,
            address=a,
            required=False,
        )
        for a in setup.addresses
    ]
    placeholder = Record(
        setup.hostname,
        "A",
        "address",
        f"{purpose}: put your public IPv4 address here (and an AAAA for IPv6)",
    )
    return found + reverse if found else [placeholder]


def _service_records(setup: MailSetup) -> list[Record]:
    """RFC 6186 SRV records (with RFC 8314's ``_submissions``), and what autoconfig uses."""
    domain, host, ports = setup.domain, setup.hostname, setup.ports
    records = []
    for service, label, implicit in SRV_SERVICES:
        name = f"{label}.{domain}"
        if service in ports:
            priority = IMPLICIT_PRIORITY if implicit else STARTTLS_PRIORITY
            how = "TLS" if implicit else "STARTTLS"
            records.append(
                Record(
                    name,
                    "SRV",
                    "srv",
                    f"clients find {service} ({how}) here (RFC 6186, RFC 8314 §5.1)",
                    target=host,
                    priority=priority,
                    weight=1,
                    port=ports[service],
                    required=False,
                )
            )
        else:
            records.append(
                Record(
                    name,
                    "SRV",
                    "srv",
                    f"{service} is off: target '.' tells clients not to try it (RFC 6186 §4)",
                    target=".",
                    required=False,
                )
            )
    if "web" in ports:
        records += [
            Record(
                f"_autodiscover._tcp.{domain}",
                "SRV",
                "srv",
                "Outlook finds its autodiscover server here (docs/autoconfig.md)",
                target=host,
                weight=1,
                port=ports["web"],
                required=False,
            ),
            Record(
                f"autoconfig.{domain}",
                "CNAME",
                "alias",
                "Thunderbird's autoconfig host (docs/autoconfig.md)",
                target=host,
                required=False,
            ),
            Record(
                f"autodiscover.{domain}",
                "CNAME",
                "alias",
                "Outlook's autodiscover host (docs/autoconfig.md)",
                target=host,
                required=False,
            ),
        ]
    return records
