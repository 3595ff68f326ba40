"""The IMAP parser on its own, fed grammar-shaped garbage (hypothesis): every argument parser
either returns or raises ParseError, within its limits; then a live session fed the same kind of
command stream answers every line with OK, NO or BAD, never an internal error, and still works.
"""

from __future__ import annotations

import contextlib
import random

from conftest import RunningServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rawclient import RawClient

from ourmail.imap import fetch, search, sequence, sort
from ourmail.imap.mailboxes import _qresync_values, _use_param
from ourmail.imap.messages import _append_groups, _fetch_modifiers, _search_returns
from ourmail.imap.wire import LITERAL_MARK, ParseError, Token, mailbox_name, tokenize
from ourmail.store.memory import MemoryFolder

WORDS = [
    "ALL", "UID", "FROM", "TO", "SUBJECT", "BODY", "TEXT", "HEADER", "NOT", "OR", "SINCE",
    "BEFORE", "ON", "LARGER", "SMALLER", "KEYWORD", "MODSEQ", "SEEN", "UNSEEN", "NEW", "$",
    "BODY.PEEK[]", "BODY[1.2.MIME]", "BINARY[1]", "BINARY.SIZE[2]", "BODY[HEADER.FIELDS",
    "ENVELOPE", "FLAGS", "RFC822.SIZE", "INTERNALDATE", "BODYSTRUCTURE", "FULL", "FAST",
    "CHANGEDSINCE", "VANISHED", "UNCHANGEDSINCE", "QRESYNC", "CONDSTORE", "USE", "\\Sent",
    "\\Seen", "\\Deleted", "\\Recent", "RETURN", "MIN", "MAX", "COUNT", "SAVE", "CHARSET",
    "UTF-8", "REVERSE", "ARRIVAL", "DATE", "1", "0", "*", "1:*", "2:4,7", "4294967296",
    "1-Feb-1994", "31-Feb-2026", "&AOQ-", "&Jjo", "INBOX", "..", "a/../b", "NIL", "~",
]  # fmt: skip

atoms = st.sampled_from(WORDS) | st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=12
).map(lambda s: s.replace(" ", "").replace('"', "").replace("(", "").replace(")", "") or "X")
quoted = st.text(max_size=20).map(
    lambda s: (
        '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "") + '"'
    )
)
literals = st.binary(max_size=40).map(lambda b: ("LIT", b))
tokens = st.recursive(
    atoms | quoted | literals,
    lambda inner: st.lists(inner, max_size=5).map(lambda xs: ("LIST", xs)),
    max_leaves=30,
)


def _render(tok: object, lits: list[bytes]) -> bytes:
    if isinstance(tok, tuple) and tok[0] == "LIT":
        lits.append(tok[1])  # type: ignore[arg-type]
        return LITERAL_MARK
    if isinstance(tok, tuple):
        return b"(" + b" ".join(_render(t, lits) for t in tok[1]) + b")"  # type: ignore[union-attr]
    return str(tok).encode("utf-8")


def _args(toks: list[object]) -> list[Token]:
    lits: list[bytes] = []
    text = b" ".join(_render(t, lits) for t in toks)
    try:
        return tokenize(text, lits)
    except ParseError:
        return []


def _only_parse_errors(fn, *args: object) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(ParseError):
        fn(*args)


FOLDER = MemoryFolder("INBOX")
for _n in range(3):
    FOLDER.append(b"From: a@b.c\r\nSubject: s\r\nDate: 1 Jan 2026 00:00:00 +0000\r\n\r\nbody\r\n")
UIDS = list(FOLDER.uids())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(tokens, max_size=8))
@example([("LIST", ["UID", "\x80"])])  # found by this test: SEARCH UID with a non-ASCII set
def test_argument_parsers_only_raise_parse_errors(toks: list[object]) -> None:
    args = _args(toks)
    _only_parse_errors(_append_groups, args)
    if args:
        first = args[0]
        for fn in (fetch.parse_atts, sort.parse_criteria, _qresync_values, _use_param,
                   _search_returns, _fetch_modifiers, mailbox_name):  # fmt: skip
            _only_parse_errors(fn, first)
        if isinstance(first, str):
            _only_parse_errors(sequence.parse_set, first)
    try:
        found = search.parse_search(args, len(UIDS), UIDS, {1})
    except ParseError:
        return
    tested = []
    for seq, uid in enumerate(UIDS, 1):  # a parsed search runs on any message
        cand = search.Candidate(seq, False, FOLDER.message(uid))
        if found.predicate(cand):
            tested.append(uid)
    assert found.matching(FOLDER, UIDS, set()) == tested  # and the index agrees


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.lists(st.binary(max_size=30), max_size=4))
def test_tokenizer_on_raw_bytes(text: bytes, lits: list[bytes]) -> None:
    _only_parse_errors(tokenize, text, lits)


COMMANDS = [
    "CAPABILITY", "NOOP", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE",
    "LIST", "LSUB", "STATUS", "APPEND", "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH",
    "FETCH", "STORE", "COPY", "MOVE", "UID FETCH", "UID SEARCH", "UID STORE", "UID EXPUNGE",
    "SORT", "ENABLE", "ID", "NAMESPACE", "GETQUOTAROOT", "GETQUOTA", "SETQUOTA", "BOGUS",
]  # fmt: skip


def _session(srv: RunningServer) -> RawClient:
    client = RawClient(srv.port("imaps"), tls=True)
    client.line()
    client.send(f'L LOGIN {srv.user} "{srv.password}"\r\n'.encode())
    assert b"L OK" in client.until(b"L ")[-1]
    client.send(b"S SELECT INBOX\r\n")
    client.until(b"S ")
    return client


def test_a_live_session_survives_a_random_command_stream(mailserver: RunningServer) -> None:
    rng = random.Random(5)
    strings = [*WORDS, '"a b"', '""', "(", ")", "((", '"x', "{3+}\r\nabc", "~{2+}\r\n\x00z"]
    client = _session(mailserver)
    answered, closed = 0, 0
    for n in range(400):
        args = " ".join(rng.choice(strings) for _ in range(rng.randint(0, 6)))
        tag = f"f{n}"
        client.send(f"{tag} {rng.choice(COMMANDS)} {args}\r\n".encode())
        lines: list[bytes] = []
        try:
            while not lines or not lines[-1].startswith(tag.encode() + b" "):
                lines.append(client.line())
        except (EOFError, OSError):
            # Closed after too many errors: the server said why first.
            assert any(x.startswith(b"* BYE") for x in lines), lines
            closed += 1
            client = _session(mailserver)
            continue
        assert b"SERVERBUG" not in b"".join(lines), lines
        assert lines[-1].split(b" ")[1] in (b"OK", b"NO", b"BAD"), lines
        answered += 1
    assert answered > 300
    client.close()
    after = _session(mailserver)
    after.send(b"a NOOP\r\n")
    assert after.until(b"a ")[-1] == b"a OK NOOP completed"
    after.close()
