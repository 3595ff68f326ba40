"""The admin console's directory users at 200,000 LDAP entries (issue 17's benchmark): a scratch
slapd loaded offline with ``slapadd``, then, through
:class:`ourmail.directory.ldapusers.LDAPUserList` on the reactor as the console asks it: the
index's first reading (in pages, RFC 2696), then the first page, a later page, one domain's
page, a two-domain admin's page and a live search.  Figures are wall time from a caller thread
to the answer (the reactor hop included); prints figures, asserts nothing.  Needs ``slapd``
and ``ldap-utils`` (Debian).

    .venv/bin/python bench/ldap_users.py --dir /var/tmp/lu --users 200000

The database is made once in ``--dir`` and reused on later runs with the same count.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from peers.slapd import SCHEMA, free_port

from ourmail.directory.ldap import LDAPSettings
from ourmail.directory.ldapusers import LDAPUserList
from ourmail.interfaces import DirectoryUnavailable, Usage

SUFFIX = "dc=example,dc=org"
ADMIN, SECRET = f"cn=mail,{SUFFIX}", "bench secret"
DOMAINS = ("example.org", "dimos.gr", "school.example.net", "library.example.com")
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
rootpw "{secret}"
directory {work}/db
maxsize 2147483648
index objectClass eq
index mail eq,sub
index cn eq,sub
index mailAlternateAddress eq,sub
index displayName eq,sub
index member eq
"""


def make(work: Path, count: int) -> None:
    """The database, loaded offline (``slapadd -q``: no per-entry checks or transactions)."""
    marker = work / f"loaded-{count}"
    if marker.exists():
        return
    shutil.rmtree(work, ignore_errors=True)
    (work / "db").mkdir(parents=True)
    (work / "ourmail-test.schema").write_text(SCHEMA)
    (work / "slapd.conf").write_text(
        CONFIG.format(work=work, suffix=SUFFIX, admin=ADMIN, secret=SECRET)
    )
    ldif = work / "people.ldif"
    with ldif.open("w") as out:
        out.write(f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\n")
        out.write(f"dc: example\no: Example\n\ndn: ou=people,{SUFFIX}\n")
        out.write("objectClass: organizationalUnit\nou: people\n\n")
        for n in range(count):
            # Entry order unlike address order, as in a real directory.
            uid = f"user{(n * 7919) % count:06d}.{'abcdefgh'[n % 8]}"
            domain = DOMAINS[n % len(DOMAINS)]
            out.write(
                f"dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\n"
                f"objectClass: ourmailUser\nuid: {uid}\ncn: {uid}\nsn: {uid}\n"
                f"mail: {uid}@{domain}\n\n"
            )
    t0 = time.perf_counter()
    subprocess.run(
        ["slapadd", "-q", "-f", str(work / "slapd.conf"), "-l", str(ldif)],
        check=True,
        capture_output=True,
    )
    print(f"slapadd of {count} entries: {time.perf_counter() - t0:.1f} s (once)")
    ldif.unlink()
    marker.touch()


def start(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        ["slapd", "-f", str(work / "slapd.conf"), "-h", f"ldap://127.0.0.1:{port}/", "-d", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    raise RuntimeError("slapd did not start")


def call(fn: Any, *args: Any) -> Any:
    return blockingCallFromThread(reactor, fn, *args)


def timed(step: Any, rounds: int = 20) -> str:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        step()
        samples.append((time.perf_counter() - t0) * 1000)
    return f"median {statistics.median(samples):7.2f} ms, max {max(samples):7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--users", type=int, default=200_000)
    args = parser.parse_args()
    work = args.dir.resolve()
    make(work, args.users)
    (work / "secret").write_text(SECRET)
    proc, port = start(work)
    from threading import Thread

    Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True).start()
    try:
        url = (
            f"ldap://127.0.0.1:{port}/{SUFFIX}?timeout=60&bind={ADMIN}&password_file={work}/secret"
        )
        settings = LDAPSettings.from_urls(url)
        users = LDAPUserList(settings, reactor, lambda d: True, lambda a: Usage(0, 0))
        everyone, one, two = list(DOMAINS), [DOMAINS[1]], list(DOMAINS[:2])
        t0 = time.perf_counter()
        count = None
        while count is None:  # as the console's pages do: ask again while it is read
            try:
                count = call(users.count, everyone)
            except DirectoryUnavailable:
                time.sleep(1)
        print(f"{count} directory users; the index's first reading (in pages, then sorted "
              f"in a thread): {time.perf_counter() - t0:.2f} s")  # fmt: skip
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"this process's peak memory after the reading: {rss:.0f} MB")
        later = (count // 2 // 50) * 50
        print("first page, all domains:   ", timed(lambda: call(users.users, everyone, "", 0, 50)))
        print(f"a later page (offset {later}):", timed(
            lambda: call(users.users, everyone, "", later, 50)))  # fmt: skip
        print("one domain's first page:   ", timed(lambda: call(users.users, one, "", 0, 50)))
        print("a two-domain admin's page: ", timed(lambda: call(users.users, two, "", 0, 50), 10))
        found = call(users.users, everyone, "user01234", 0, 50)
        print(f"a live search ({found.total} matches):",
              timed(lambda: call(users.users, everyone, "user01234", 0, 50), 10))  # fmt: skip
        print("a live search, 200+ matches:",
              timed(lambda: call(users.users, everyone, "user1", 0, 50), 5))  # fmt: skip
    finally:
        reactor.callFromThread(reactor.stop)
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


if __name__ == "__main__":
    main()
