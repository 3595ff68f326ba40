"""A private OpenLDAP ``slapd`` (Debian's) on a loopback port, with a throwaway mdb database.

The directory ``dc=example,dc=test`` holds what the LDAP tests need.  Besides the standard
schemas it loads a small test schema: ``mailAlternateAddress``, ``mailHost``, ``mailQuota``
and ``mailAccountStatus`` on an auxiliary ``ourmailUser`` class, and ``ourmailGroup`` to give a
``groupOfNames`` a ``mail`` address; and the Active Directory attributes ourmail reads
(``sAMAccountName``, ``userPrincipalName``, ``proxyAddresses``, ``userAccountControl``,
``objectCategory``) on a ``user`` class, with AD's ``group`` class, so that ``schema=ad`` is
tested against the shape of an AD entry.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ourmail.secure import selfsigned

SUFFIX = "dc=example,dc=test"
ADMIN_DN, ADMIN_PASSWORD = f"cn=admin,{SUFFIX}", "admin secret"

SCHEMA = """\
attributetype ( 1.3.6.1.4.1.99999.1.1 NAME 'mailAlternateAddress'
  EQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.26{256} )
attributetype ( 1.3.6.1.4.1.99999.1.2 NAME 'mailHost'
  EQUALITY caseIgnoreIA5Match SYNTAX 1.3.6.1.4.1.1466.115.121.1.26{256} SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.3 NAME 'mailQuota'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.4 NAME 'mailAccountStatus'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.99999.2.1 NAME 'ourmailUser' AUXILIARY
  MAY ( mailAlternateAddress $ mailHost $ mailQuota $ mailAccountStatus ) )
objectclass ( 1.3.6.1.4.1.99999.2.2 NAME 'ourmailGroup' AUXILIARY MAY ( mail ) )
attributetype ( 1.3.6.1.4.1.99999.3.1 NAME 'sAMAccountName'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.3.2 NAME 'userPrincipalName'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.3.3 NAME 'proxyAddresses'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( 1.3.6.1.4.1.99999.3.4 NAME 'userAccountControl'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.3.5 NAME 'objectCategory'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.99999.4.1 NAME 'user' AUXILIARY
  MAY ( sAMAccountName $ userPrincipalName $ proxyAddresses $ userAccountControl $
        objectCategory ) )
objectclass ( 1.3.6.1.4.1.99999.4.2 NAME 'group' STRUCTURAL
  MUST cn MAY ( member $ mail $ proxyAddresses $ objectCategory ) )
"""

CONFIG = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include {work}/ourmail-test.schema
pidfile {work}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
suffix "{suffix}"
rootdn "{admin}"
rootpw "{password}"
directory {work}/db
maxsize 10485760
access to attrs=userPassword by self =xw by anonymous auth by * none
access to * by * read
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def user_ldif(uid: str, password: str, *extra: str) -> str:
    """An inetOrgPerson ``uid=<uid>,ou=people`` with ``mail: <uid>@example.test``."""
    lines = [
        f"dn: uid={uid},ou=people,{SUFFIX}",
        "objectClass: inetOrgPerson",
        "objectClass: ourmailUser",
        f"uid: {uid}",
        f"cn: {uid}",
        f"sn: {uid}",
        f"mail: {uid}@example.test",
        f"userPassword: {password}",
        *extra,
    ]
    return "\n".join(lines) + "\n\n"


class Slapd:
    """A running slapd: its URL (and ``ldaps_url`` with TLS), and ``add`` / ``stop`` /
    ``start`` / ``pause`` / ``resume``."""

    def __init__(self, work: Path, port: int, tls_port: int | None = None) -> None:
        self.work, self.port = work, port
        self.url = f"ldap://127.0.0.1:{port}"
        self.ldaps_url = f"ldaps://localhost:{tls_port}" if tls_port else None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        listen = self.url + "/"
        if self.ldaps_url:
            listen += " " + self.ldaps_url.replace("localhost", "127.0.0.1") + "/"
        self.proc = subprocess.Popen(
            ["slapd", "-f", str(self.work / "slapd.conf"), "-h", listen, "-d", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("slapd did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
            self.proc = None

    def pause(self) -> None:
        """SIGSTOP: connections are still accepted (by the kernel) but nothing is answered,
        as with an overloaded or wedged server."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def add(self, ldif: str) -> None:
        subprocess.run(
            ["ldapadd", "-x", "-H", self.url, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD],
            input=ldif.encode(),
            check=True,
            capture_output=True,
        )


@contextmanager
def slapd(ldif: str = "", tls: bool = False) -> Iterator[Slapd]:
    """A fresh slapd with the base entries (``ou=people``, ``ou=groups``) and ``ldif``; with
    ``tls``, StartTLS and an ``ldaps://`` port too, with a self-signed certificate for
    ``localhost`` (its own CA: ``work / "cert.pem"``)."""
    if shutil.which("slapd") is None:
        raise RuntimeError("slapd is not installed: run scripts/test, which installs it")
    work = Path(tempfile.mkdtemp(prefix="ourmail-slapd-"))
    (work / "db").mkdir()
    (work / "ourmail-test.schema").write_text(SCHEMA)
    config = CONFIG.format(work=work, suffix=SUFFIX, admin=ADMIN_DN, password=ADMIN_PASSWORD)
    if tls:
        cert, key = selfsigned.generate("localhost")
        (work / "cert.pem").write_bytes(cert)
        (work / "key.pem").write_bytes(key)
        config = (
            f"TLSCertificateFile {work}/cert.pem\nTLSCertificateKeyFile {work}/key.pem\n" + config
        )
    (work / "slapd.conf").write_text(config)
    server = Slapd(work, free_port(), free_port() if tls else None)
    server.start()
    try:
        server.add(
            f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\n"
            f"o: Example\n\ndn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\n"
            f"ou: people\n\ndn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\n"
            f"ou: groups\n\n" + ldif
        )
        yield server
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
