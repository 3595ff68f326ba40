"""Learning from Junk survives kill -9: a message moved into Junk while spamd is down is
learned by the next server process once spamd is up, configured through ourmail.toml as an
admin would (``[filters.check.spam]``, ``[filters.learning]``)."""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from conftest import client_tls
from peers.spamd import Spamd, free_port
from queuehelp import wait_for
from twistdhelp import Twistd

from ourmail.auth.accounts import AccountDB
from ourmail.auth.passwords import hash_password

pytestmark = pytest.mark.system

USER, PASSWORD = "alice@example.test", "x" * 12


def config(spamd_port: int) -> str:
    return f"""domains = ["example.test"]
[smtp]
mx_processes = 1
[filters]
chain = ["spam"]
[filters.check.spam]
address = "127.0.0.1:{spamd_port}"
[filters.learning]
retry_min = 0.3
retry_max = 0.5
timeout = 5
"""


def move_into_junk(port: int) -> None:
    m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=client_tls())
    m.login(USER, PASSWORD)
    m.select("INBOX")
    body = f"Cheap replica watches {uuid.uuid4()}"
    msg = f"From: x@else.test\r\nTo: {USER}\r\nSubject: hi\r\n\r\n{body}\r\n".encode()
    typ, resp = m.append("INBOX", "", None, msg)
    assert typ == "OK", resp
    typ, resp = m.uid("MOVE", "1", "Junk")
    assert typ == "OK", resp
    m.logout()


def test_a_move_survives_kill_9_and_is_learned_later(tmp_path: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="ourmail-spamd-"))
    (work / "bayes").mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(work / "bayes", nobody.pw_uid, nobody.pw_gid)
    os.chmod(work, 0o755)
    spamd = Spamd(work, free_port())
    data = tmp_path / "ourmail-data"
    data.mkdir(mode=0o700)
    (data / "ourmail.toml").write_text(config(spamd.port))
    AccountDB(data).add_user(USER, hash_password(PASSWORD))
    server = Twistd(data)
    try:
        move_into_junk(server.ports["imaps"])  # spamd is not running
        wait_for(lambda: any("could not teach the spam scanner" in x for x in server.log), 10)
        server.kill()
        spamd.start()
        server = Twistd(data)
        wait_for(lambda: any("learned a message of" in x for x in server.log), 30)
        assert spamd.magic()["nspam"] == 1
    finally:
        server.kill()
        spamd.stop()
        shutil.rmtree(work, ignore_errors=True)
