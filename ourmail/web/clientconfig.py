"""What mail clients are told about this server, in the formats they ask for (issue 17 point 6):
Thunderbird's autoconfig, Outlook's autodiscover (POX), Apple configuration profiles and the
MTA-STS policy of RFC 8461.  Pure functions from :class:`ClientSetup` to bytes; the routes are
in ``ourmail/web/autoconfig.py``.

Every format lists implicit TLS first (RFC 8314 §3.3: preferred to STARTTLS), then STARTTLS;
a service that is switched off is not offered.  No format ever carries a password.
"""

from __future__ import annotations

import plistlib
import uuid
from collections.abc import Mapping

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from lxml import etree

#: Outlook's autodiscover namespaces (the "POX" protocol of [MS-OXDSCLI]).
AD_REQUEST = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
AD_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
AD_OUTLOOK = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
#: Bytes of an autodiscover request read at most.
MAX_REQUEST = 16 * 1024


@attrs.frozen
class ClientSetup:
    """The server as clients should reach it."""

    #: The host name clients connect to (the certificate's name).
    hostname: str
    #: service name (``imaps``, ``submission``...) -> the port clients use; a service not
    #: here is off.
    ports: Mapping[str, int]
    #: RFC 8461 §3.2 policy mode (``testing``, ``enforce`` or ``none``) and max_age (seconds).
    mta_sts_mode: str = "testing"
    mta_sts_max_age: int = 7 * 86400


#: (service, Thunderbird type, socketType) in the order clients should try them.
_INCOMING = (
    ("imaps", "imap", "SSL"),
    ("imap", "imap", "STARTTLS"),
    ("pop3s", "pop3", "SSL"),
    ("pop3", "pop3", "STARTTLS"),
)
_OUTGOING = (("submissions", "SSL"), ("submission", "STARTTLS"))


def thunderbird(domain: str, setup: ClientSetup) -> bytes:
    """Thunderbird's ``config-v1.1.xml`` for ``domain`` (the Mozilla autoconfig format)."""
    root = etree.Element("clientConfig", version="1.1")
    provider = etree.SubElement(root, "emailProvider", id=domain)
    for name, text in (("domain", domain), ("displayName", domain), ("displayShortName", domain)):
        etree.SubElement(provider, name).text = text

    def server(tag: str, kind: str, port: int, socket: str) -> None:
        element = etree.SubElement(provider, tag, type=kind)
        for name, text in (
            ("hostname", setup.hostname),
            ("port", str(port)),
            ("socketType", socket),
            ("authentication", "password-cleartext"),  # over TLS only (SSL or STARTTLS)
            ("username", "%EMAILADDRESS%"),
        ):
            etree.SubElement(element, name).text = text

    for service, kind, socket in _INCOMING:
        if service in setup.ports:
            server("incomingServer", kind, setup.ports[service], socket)
    for service, socket in _OUTGOING:
        if service in setup.ports:
            server("outgoingServer", "smtp", setup.ports[service], socket)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def autodiscover_address(body: bytes) -> str | None:
    """The ``EMailAddress`` of an Outlook autodiscover request, or None when the body is no
    such request.  The parser resolves no entity and fetches nothing (no XXE)."""
    if len(body) > MAX_REQUEST:
        return None
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError:
        return None
    found = root.find(f"{{{AD_REQUEST}}}Request/{{{AD_REQUEST}}}EMailAddress")
    text = (found.text or "").strip() if found is not None else ""
    return text if 3 <= len(text) <= 320 and "@" in text else None


def autodiscover(address: str, setup: ClientSetup) -> bytes:
    """Outlook's autodiscover response for ``address``: IMAP (or POP3) and SMTP settings."""
    root = etree.Element(f"{{{AD_RESPONSE}}}Autodiscover", nsmap={None: AD_RESPONSE})
    response = etree.SubElement(root, f"{{{AD_OUTLOOK}}}Response", nsmap={None: AD_OUTLOOK})
    account = etree.SubElement(response, f"{{{AD_OUTLOOK}}}Account")
    etree.SubElement(account, f"{{{AD_OUTLOOK}}}AccountType").text = "email"
    etree.SubElement(account, f"{{{AD_OUTLOOK}}}Action").text = "settings"

    def protocol(kind: str, port: int, implicit: bool) -> None:
        element = etree.SubElement(account, f"{{{AD_OUTLOOK}}}Protocol")
        fields = [("Type", kind), ("Server", setup.hostname), ("Port", str(port))]
        fields += [("LoginName", address), ("DomainRequired", "off"), ("SPA", "off")]
        # "SSL on" is implicit TLS; STARTTLS is "Encryption TLS" (Outlook 2010 and later).
        fields += [("SSL", "on")] if implicit else [("Encryption", "TLS")]
        fields += [("AuthRequired", "on")]
        for name, text in fields:
            etree.SubElement(element, f"{{{AD_OUTLOOK}}}{name}").text = text

    # Outlook takes one server per protocol type: the first that is on.
    for kind, choices in (
        ("IMAP", (("imaps", True), ("imap", False))),
        ("POP3", (("pop3s", True), ("pop3", False))),
        ("SMTP", (("submissions", True), ("submission", False))),
    ):
        for service, implicit in choices:
            if service in setup.ports:
                protocol(kind, setup.ports[service], implicit)
                break
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def apple_profile(address: str, setup: ClientSetup) -> bytes:
    """An Apple configuration profile (``.mobileconfig``, a property list) with one mail
    account for ``address``: IMAP and SMTP, TLS, password authentication; the device asks for
    the password.  Its identifiers are derived from the address and host, so downloading it
    again replaces the account instead of adding a second one."""
    incoming = next(((s, p) for s in ("imaps", "imap") if (p := setup.ports.get(s))), None)
    outgoing = next(
        ((s, p) for s in ("submissions", "submission") if (p := setup.ports.get(s))), None
    )
    if incoming is None or outgoing is None:
        raise ValueError("Apple profiles need IMAP and submission listeners")
    reverse = ".".join(reversed(setup.hostname.split(".")))
    seed = f"{address}\0{setup.hostname}"
    account = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{reverse}.mail.account",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, "account\0" + seed)).upper(),
        "PayloadDisplayName": address,
        "EmailAccountDescription": address,
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAddress": address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerHostName": setup.hostname,
        "IncomingMailServerPortNumber": incoming[1],
        "IncomingMailServerUseSSL": True,  # on the STARTTLS port: STARTTLS
        "IncomingMailServerUsername": address,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": setup.hostname,
        "OutgoingMailServerPortNumber": outgoing[1],
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": address,
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadContent": [account],
        "PayloadDisplayName": f"{address} ({setup.hostname})",
        "PayloadIdentifier": f"{reverse}.mail",
        "PayloadType": "Configuration",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, "profile\0" + seed)).upper(),
        "PayloadVersion": 1,
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)


def sign_profile(profile: bytes, certificate_pem: bytes, key_pem: bytes) -> bytes:
    """``profile`` signed (CMS SignedData, DER) with the server's certificate and key, the
    chain in the PEM file included, as Apple devices accept it.  CPU work: call in a thread."""
    chain = x509.load_pem_x509_certificates(certificate_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    builder = pkcs7.PKCS7SignatureBuilder().set_data(profile)
    builder = builder.add_signer(chain[0], key, hashes.SHA256())  # type: ignore[arg-type]
    for extra in chain[1:]:
        builder = builder.add_certificate(extra)
    return builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])


def mta_sts_policy(setup: ClientSetup) -> bytes:
    """The RFC 8461 §3.2 policy file: CRLF-ended ``key: value`` lines, this host as the MX."""
    lines = [
        "version: STSv1",
        f"mode: {setup.mta_sts_mode}",
        f"mx: {setup.hostname}",
        f"max_age: {setup.mta_sts_max_age}",
    ]
    return "".join(line + "\r\n" for line in lines).encode("ascii")
