"""A private Postfix for the SMTP benchmarks: its own ``main.cf``/``master.cf`` in a folder of
ours, smtpd on a loopback port, every message for one user delivered by Postfix's ``virtual``
agent into a Maildir (fsynced before the rename, as ourmail does before its ``250``).

Needs Debian's postfix package, installed with no configuration (the system's Postfix is
neither configured nor started):

    echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y postfix

Runs as root (Postfix's master drops to the ``postfix`` user); the mail is written as
``nobody``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

# Only the services a Postfix needs to receive and deliver locally; none chrooted.
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {base}/queue
data_directory = {base}/data
mail_owner = postfix
myhostname = postfix.bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
alias_maps =
alias_database =
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
disable_dns_lookups = yes
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {base}/mail
virtual_mailbox_maps = inline:{{ {user}={user}/ }}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 100
"""


def installed() -> bool:
    return shutil.which("postfix") is not None


def cpu_seconds(base: Path) -> float:
    """User + system time of the Postfix in ``base`` so far: its master, the children it has
    reaped and those still running."""
    master = int((base / "queue" / "pid" / "master.pid").read_text().split()[0])
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(entry) == master:
                ticks += sum(int(f) for f in fields[11:15])
            elif int(fields[1]) == master:
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def private_postfix(base: Path, port: int, user: str) -> Iterator[Path]:
    """Run a Postfix in ``base`` listening on 127.0.0.1:``port``; yields the Maildir that
    ``user``'s mail goes to.  Stopped (``postfix stop``) on the way out."""
    nobody = pwd.getpwnam("nobody")
    postfix = pwd.getpwnam("postfix")
    for sub in ("conf", "queue", "data", "mail"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    shutil.chown(base / "data", postfix.pw_uid)
    shutil.chown(base / "mail", nobody.pw_uid, nobody.pw_gid)
    values = {"base": base, "port": port, "user": user, "domain": user.split("@")[1]}
    values |= {"uid": nobody.pw_uid, "gid": nobody.pw_gid}
    (base / "conf" / "main.cf").write_text(MAIN_CF.format(**values))
    (base / "conf" / "master.cf").write_text(MASTER_CF.format(**values))
    conf = str(base / "conf")
    started = subprocess.run(["postfix", "-c", conf, "start"], capture_output=True, text=True)
    if started.returncode != 0:
        raise RuntimeError(f"postfix -c {conf} start failed: {started.stderr.strip()}")
    try:
        yield base / "mail" / user
    finally:
        subprocess.run(["postfix", "-c", conf, "stop"], check=False, capture_output=True)
