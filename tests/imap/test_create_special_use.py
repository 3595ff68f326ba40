"""CREATE-SPECIAL-USE (RFC 6154 §3, §5.3): a use given at CREATE is shown by LIST, follows the
folder through RENAME, goes with it at DELETE, and survives a restart."""

from __future__ import annotations

from conftest import RunningServer
from imaphelp import Session

from ourmail.store.userstore import MaildirStore


def _attrs(lines: list[bytes], name: bytes) -> bytes:
    found = [line for line in lines if line.startswith(b"* LIST") and line.endswith(name)]
    assert len(found) == 1, lines
    return found[0]


def test_create_with_use_as_in_rfc_6154(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    assert b"CREATE-SPECIAL-USE" in s.ok("CAPABILITY")[0]
    # RFC 6154 §5.3: C: t1 CREATE "Important Messages" (USE (\Flagged))
    #                S: t1 NO [USEATTR] \Flagged not supported
    assert b"NO [USEATTR]" in s.cmd('CREATE "Important Messages" (USE (\\Flagged))')[-1]
    assert b"NO [USEATTR]" in s.cmd("CREATE Both (USE (\\Sent \\Drafts))")[-1]
    s.ok("CREATE Gesendet (USE (\\sent))")
    s.ok("CREATE Plain")
    lines = s.ok('LIST "" "*"')
    assert b"\\Sent" in _attrs(lines, b' "Gesendet"')
    assert b"\\Sent" in _attrs(lines, b' "Sent"')  # the default folder keeps its use
    assert b"\\" not in _attrs(lines, b' "Plain"').split(b"(")[1].replace(b"\\HasNoChildren", b"")
    special = s.ok('LIST (SPECIAL-USE) "" "*"')
    assert any(line.endswith(b' "Gesendet"') for line in special)
    assert not any(line.endswith(b' "Plain"') for line in special)
    s.ok("RENAME Gesendet Postausgang")
    assert b"\\Sent" in _attrs(s.ok('LIST "" "*"'), b' "Postausgang"')
    s.ok("DELETE Postausgang")
    s.ok("CREATE Postausgang")
    assert b"\\Sent" not in _attrs(s.ok('LIST "" "*"'), b' "Postausgang"')
    assert b" BAD " in s.cmd("CREATE X (FOO (\\Sent))")[-1]
    assert s.cmd('LIST "" "Important Messages"')[0].endswith(b"OK LIST completed")
    s.close()


def test_use_is_kept_on_disk(mailserver: RunningServer) -> None:
    s = Session(mailserver)
    s.ok("CREATE Entw&APw-rfe (USE (\\Drafts))")
    s.close()
    fresh = MaildirStore(mailserver.data).user(mailserver.user)  # as after a restart
    assert fresh.special_uses()["Entwürfe"] == "\\Drafts"
    assert fresh.special_uses()["Sent"] == "\\Sent"
