"""A private Dovecot (Debian's dovecot-imapd) on a loopback port, serving one Maildir.

Dovecot's unprivileged processes cannot enter the test's private (0700) directories, so it runs
in its own directory under /var/tmp on an exact copy of the Maildir (``cp -a``: same names,
bytes and times), owned by ``nobody``, whom the mail process runs as.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CONFIG = """\
listen = 127.0.0.1
protocols = {protocol}
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain
base_dir = {run}
state_dir = {state}
log_path = {log}
mail_location = maildir:{maildir}
first_valid_uid = 1
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={home}
}}
service {protocol}-login {{
  inet_listener {protocol} {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener {protocol}s {{
    port = 0
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def dovecot(
    source: Path,
    user: str,
    password: str,
    tls: tuple[Path, Path] | None = None,
    argon2: bool = False,
    protocol: str = "imap",
) -> Iterator[tuple[int, Path]]:
    """Run Dovecot for ``user`` on a copy of the Maildir ``source``; yields (port, the copy).

    With ``tls`` (certificate, key) it offers STARTTLS with that pair, as ourmail does.  With
    ``argon2`` the password is stored as Dovecot's own argon2id hash (m=64 MiB, t=3, the cost
    ourmail's hashes have), so LOGIN costs the same on both sides.  ``protocol`` is ``imap``
    or ``pop3``: the one service it listens for (with STARTTLS/STLS)."""
    if shutil.which("dovecot") is None:
        raise RuntimeError("Dovecot is not installed: run scripts/test, which installs it")
    workdir = Path(tempfile.mkdtemp(prefix="ourmail-dovecot-", dir="/var/tmp"))
    workdir.chmod(0o755)
    maildir = workdir / "Maildir"
    subprocess.run(["cp", "-a", str(source), str(maildir)], check=True)
    for sub in ("run", "state", "home"):
        (workdir / sub).mkdir()
    entry = f"{{PLAIN}}{password}"
    if argon2:
        pw = ["doveadm", "pw", "-s", "ARGON2ID", "-p", password]
        entry = subprocess.run(pw, check=True, capture_output=True, text=True).stdout.strip()
    (workdir / "passwd").write_text(f"{user}:{entry}\n")
    owned = [str(maildir), str(workdir / "home")]
    subprocess.run(["chown", "-R", "nobody:nogroup", *owned], check=True)
    port = free_port()
    ssl = "ssl = no"
    if tls is not None:
        for name, path in zip(("cert.pem", "key.pem"), tls, strict=True):
            shutil.copy(path, workdir / name)
        ssl = f"ssl = yes\nssl_cert = <{workdir / 'cert.pem'}\nssl_key = <{workdir / 'key.pem'}"
    conf = workdir / "dovecot.conf"
    conf.write_text(
        CONFIG.format(
            run=workdir / "run",
            state=workdir / "state",
            log=workdir / "dovecot.log",
            maildir=maildir,
            passwd=workdir / "passwd",
            home=workdir / "home",
            port=port,
            ssl=ssl,
            protocol=protocol,
        )
    )
    subprocess.run(["dovecot", "-c", str(conf)], check=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield port, maildir
    finally:
        subprocess.run(["dovecot", "-c", str(conf), "stop"], check=False)
        if os.environ.get("OURMAIL_SHOW_PEER_LOGS"):
            print((workdir / "dovecot.log").read_text())
        shutil.rmtree(workdir, ignore_errors=True)
