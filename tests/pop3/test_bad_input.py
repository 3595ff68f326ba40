"""Bad POP3 input gets the protocol's error reply, never a traceback: long lines, wrong states,
pipelined garbage, random command streams; and the byte-stuffing of RETR at chunk edges."""

from __future__ import annotations

import random

from conftest import RunningServer
from hypothesis import given, settings
from hypothesis import strategies as st
from pop3help import deliver, raw

from ourmail.net.dotstuff import stuffed


def test_long_lines_wrong_states_and_garbage(mailserver: RunningServer) -> None:
    c = raw(mailserver, login=False)
    c.send(b"RETR 1\r\n")
    assert c.line() == b"-ERR Command not valid in this state"
    c.send(b"X" * 100_000 + b"\r\n")  # a 100 KB line
    assert c.line() == b"-ERR Line too long"
    c.send(b"\x00\xff garbage\r\nPASS x\r\nAUTH\r\n")
    assert c.line() == b"-ERR Unknown command"
    assert c.line() == b"-ERR USER first"
    assert c.line() == b"-ERR Unsupported authentication mechanism"
    c.send(f"USER {mailserver.user}\r\nPASS {mailserver.password}\r\n".encode())
    c.line()
    assert c.line().startswith(b"+OK Maildrop")
    c.send(b"RETR 0\r\nRETR x\r\nTOP 1\r\nLIST 99999999999999999999\r\nSTLS\r\nDELE -1\r\nNOOP\r\n")
    assert [c.line()[:4] for _ in range(7)] == [b"-ERR"] * 6 + [b"+OK"]
    c.close()


def test_a_random_command_stream_never_breaks_the_server(mailserver: RunningServer) -> None:
    deliver(mailserver, 3)
    rng = random.Random(6)
    words = ["STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "NOOP", "CAPA", "USER",
             "PASS", "AUTH", "STLS", "APOP", "XTND", "1", "0", "-1", "99", "2 2", "PLAIN", "*",
             "=", "\x7f", "é", "1 99999999999999999999", " ", "\t"]  # fmt: skip
    c = raw(mailserver)
    answered = 0
    for _ in range(300):
        line = " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
        parts = line.split()
        verb = parts[0].upper() if parts else ""
        if verb in ("QUIT", "STLS", "AUTH", "USER", "PASS"):
            continue  # these change the session; covered elsewhere
        c.send(line.encode() + b"\r\n")
        reply = c.line()
        assert reply.startswith((b"+OK", b"-ERR")), (line, reply)
        assert b"SYS/TEMP" not in reply, line
        listing = verb in ("LIST", "UIDL") and len(parts) == 1
        if reply.startswith(b"+OK") and (listing or verb in ("RETR", "TOP", "CAPA")):
            while c.line() != b".":
                pass
        answered += 1
        if answered % 15 == 0:  # a new session before 20 errors close this one
            c.close()
            c = raw(mailserver)
    c.send(b"NOOP\r\n")
    assert c.line() == b"+OK"
    c.close()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b".", b"\r\n", b"x", b"\r", b"\n", b".."]), max_size=40),
       st.integers(1, 7))  # fmt: skip
def test_stuffing_is_the_same_whatever_the_chunks(parts: list[bytes], size: int) -> None:
    data = b"".join(parts)
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    out = b"".join(stuffed(iter(chunks)))
    whole = (b"\r\n" + data).replace(b"\r\n.", b"\r\n..")[2:]
    ending = b".\r\n" if data.endswith(b"\r\n") or not data else b"\r\n.\r\n"
    assert out == whole + ending
