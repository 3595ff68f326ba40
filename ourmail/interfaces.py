"""The public plugin API of ourmail.

Plugin authors implement these interfaces (a store, a directory) or receive them (a realm hands out
an :class:`IUserStore` as the avatar for IMAP and POP3).  Folder names are Unicode strings with
``/`` as the hierarchy separator; ``INBOX`` is always present.  Flags are strings: the RFC 3501
system flags spelled ``\\Seen``, ``\\Answered``, ``\\Flagged``, ``\\Deleted``, ``\\Draft``, and
keywords such as ``$Forwarded``.

Methods that make data durable return Deferreds that fire only once the data is on disk (fsync of
file and directory); the others are quick in-memory or metadata operations and return plainly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from types import MappingProxyType
from typing import BinaryIO, Literal

import attrs
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from ourmail.config import QuotaLimit
from ourmail.dsnparams import MailParams, RcptParams
from ourmail.mime.structure import Buffer
from ourmail.mime.summary import Summary

#: What a store accepts as a message: bytes, an open binary file, or a path to hard-link or copy.
MessageSource = bytes | BinaryIO | os.PathLike[str]

#: How :meth:`IFolder.store_flags` combines flags: replace, add or remove.
FlagMode = Literal["=", "+", "-"]

#: The folders every user has from their first login, with their RFC 6154 special use.
DEFAULT_FOLDERS: Mapping[str, str] = MappingProxyType(
    {
        "Sent": "\\Sent",
        "Drafts": "\\Drafts",
        "Trash": "\\Trash",
        "Junk": "\\Junk",
        "Archive": "\\Archive",
    }
)


class StoreError(Exception):
    """A store operation failed; the message is fit to show a client."""


class NoSuchFolder(StoreError):
    """The folder does not exist."""


class FolderExists(StoreError):
    """A folder of that name already exists."""


class ShardMoving(StoreError):
    """The user's mail is being moved to another volume: try again in a moment."""


class BadFolderName(StoreError):
    """The name cannot be a folder (empty part, ``.``, control characters, too long …)."""


class IStoredMessage(Interface):
    """One message in a folder, as of the folder's last sync."""

    uid = Attribute("int: the message's UID, stable for the life of the folder's UIDVALIDITY")
    size = Attribute("int: size in bytes with CRLF line endings (RFC 3501 RFC822.SIZE)")
    flags = Attribute("frozenset[str]: system flags and keywords")
    internal_date = Attribute("float: the IMAP internal date as a POSIX timestamp")
    modseq = Attribute("int: the folder modseq of the message's last change (RFC 7162)")
    key = Attribute("str: an identifier of the stored file, stable for the message's life")

    def read() -> bytes:
        """The whole message with CRLF line endings."""

    def buffer() -> Buffer:
        """The whole message with CRLF line endings, for reading parts of it: a store may
        return a read-only memory map of a large message's file so it is never copied into
        memory whole (FETCH BODY[] streams from it).  KeyError if the message is gone."""

    def summary() -> Summary:
        """Envelope fields, body structure and searchable headers as plain data
        (:mod:`ourmail.mime.summary`), from the index when cached."""


class IFolder(Interface):
    """A mail folder with IMAP semantics (RFC 3501 §2.3)."""

    name = Attribute("str: the folder's name, e.g. 'INBOX' or 'Archive/2024'")
    uidvalidity = Attribute("int: RFC 3501 §2.3.1.1 UIDVALIDITY")
    uidnext = Attribute("int: the UID the next message will get")
    highestmodseq = Attribute("int: grows whenever a message is added, changed or removed")
    total_size = Attribute("int: the sum of the sizes of the messages present (for quota)")

    def sync() -> bool:
        """Pick up changes made by other sessions and processes; True if anything changed."""

    def uids() -> Sequence[int]:
        """The UIDs present, ascending (message sequence number n is ``uids()[n-1]``)."""

    def keywords() -> list[str]:
        """Keywords defined in the folder (for the FLAGS response of SELECT)."""

    def claim_recent() -> list[int]:
        """UIDs that are ``\\Recent`` for the caller; each is given to one caller only."""

    def recent_count() -> int:
        """How many messages no session has claimed as recent yet."""

    def first_unseen() -> int | None:
        """The lowest UID without ``\\Seen``, or None."""

    def unseen_count() -> int:
        """How many messages lack ``\\Seen``."""

    def changes_since(modseq: int) -> list[int] | None:
        """UIDs added, changed or expunged after ``modseq``; None if that is unknown."""

    def message(uid: int) -> IStoredMessage:
        """The message with this UID; KeyError if it is gone."""

    def search_headers(field: str, needle: str) -> set[int]:
        """UIDs of the messages whose decoded header ``field`` (``from``, ``to``, ``cc``,
        ``bcc`` or ``subject``) contains ``needle``, given in lower case, ignoring case
        (RFC 3501 §6.4.4).  A store may answer from an index without opening messages."""

    def filter_contents(uids: Iterable[int], test: Callable[[Buffer], bool]) -> Deferred[set[int]]:
        """The UIDs among ``uids`` of messages present whose whole content (CRLF line endings,
        as ``IStoredMessage.buffer`` gives it) passes ``test`` (BODY and TEXT search).  A store
        may run ``test`` in worker threads: it must only read its argument."""

    def uids_with_flag(flag: str) -> AbstractSet[int]:
        """UIDs of the messages present holding ``flag`` (a system flag or a keyword),
        exactly: no UID expunged since.  The caller must not change the set.  A store may
        answer from an index without a pass over the messages."""

    def uids_without_flag(flag: str) -> AbstractSet[int]:
        """UIDs of the messages present that lack ``flag`` (UNSEEN, UNDELETED, UNKEYWORD),
        exactly: no UID expunged since.  The caller must not change the set.  A store may
        answer from an index without a pass over the messages."""

    def uids_dated(start: float | None, end: float | None) -> AbstractSet[int]:
        """UIDs of the messages whose internal date (POSIX seconds) is at least ``start`` and
        below ``end``; None leaves that end open."""

    def uids_sized(low: int | None, high: int | None) -> AbstractSet[int]:
        """UIDs of the messages whose size is at least ``low`` and below ``high``; None leaves
        that end open."""

    def uids_ordered(key: Literal["date", "size"]) -> Sequence[int]:
        """The UIDs present in ascending order of internal date (``"date"``) or size
        (``"size"``), equal keys by UID: a message list sorted by either opens no message.
        A store may answer from an index; the caller must not change the sequence."""

    def header_values(field: str) -> Mapping[int, str]:
        """The decoded value of header ``field`` (``from``, ``to``, ``cc``, ``bcc`` or
        ``subject``, as :meth:`search_headers` sees it), in lower case, of every message
        present, by UID ("" when the message has no such field): a message list sorted by
        sender or subject opens no message.  The mapping may also hold UIDs expunged since
        (look up the UIDs you have); the caller must not change it."""

    def append(
        source: MessageSource, flags: Iterable[str] = (), internal_date: float | None = None
    ) -> Deferred[int]:
        """Store a new message durably; fires with its UID."""

    def store_flags(
        uids: Iterable[int], flags: Iterable[str], mode: FlagMode
    ) -> dict[int, frozenset[str]]:
        """Change flags; returns the new flags of each message that still exists."""

    def expunge(uids: Iterable[int]) -> list[int]:
        """Remove these messages; returns the UIDs actually removed."""

    def copy_to(uids: Iterable[int], target: IFolder) -> Deferred[list[tuple[int, int]]]:
        """Copy messages with their flags; fires with (source uid, new uid) pairs."""

    def move_to(uids: Iterable[int], target: IFolder) -> Deferred[list[tuple[int, int]]]:
        """Copy, then expunge the originals; fires with (source uid, new uid) pairs."""

    def add_listener(callback: Callable[[], None]) -> None:
        """Call ``callback()`` after each change seen or made in this process (for IDLE)."""

    def remove_listener(callback: Callable[[], None]) -> None:
        """Stop calling ``callback``."""


class IUserStore(Interface):
    """One user's folders. This is the avatar the realm hands to IMAP and POP3 sessions."""

    address = Attribute("str: the user's address")

    def list_folders() -> list[str]:
        """Every folder name, INBOX first."""

    def folder(name: str) -> IFolder:
        """The folder (``INBOX`` in any case); NoSuchFolder if absent."""

    def create_folder(name: str, special_use: str | None = None) -> None:
        """Create a folder (and any missing parents); FolderExists, BadFolderName.
        ``special_use`` is an RFC 6154 attribute such as ``\\Sent`` to record for it."""

    def special_uses() -> dict[str, str]:
        """RFC 6154 special uses recorded at creation: folder name -> attribute.  They follow
        a folder when it is renamed and go with it when it is deleted."""

    def delete_folder(name: str) -> None:
        """Delete a folder and its messages; NoSuchFolder; StoreError for INBOX or a parent."""

    def rename_folder(old: str, new: str) -> None:
        """Rename a folder with its children."""

    def subscriptions() -> list[str]:
        """Subscribed folder names (RFC 3501 §6.3.6)."""

    def subscribe(name: str) -> None:
        """Add ``name`` to the subscriptions."""

    def unsubscribe(name: str) -> None:
        """Remove ``name`` from the subscriptions."""

    def deliver(
        source: MessageSource, folder: str = "INBOX", flags: Iterable[str] = ()
    ) -> Deferred[int]:
        """Durably deliver a message (CRLF line endings) into a folder; fires with its UID."""


@attrs.frozen
class Usage:
    """What a user stores: bytes and messages over all their folders."""

    bytes: int
    messages: int


class IQuotaPolicy(Interface):
    """Storage limits: which applies to a user, what they use, whether a message still fits.

    Protocols ask before they store (SMTP RCPT and DATA, IMAP APPEND and COPY) and report
    (IMAP GETQUOTA, RFC 9208)."""

    permanent = Attribute(
        "bool: a delivery over quota is refused for good (5.2.2) rather than for now (4.2.2)"
    )

    def limit(address: str) -> QuotaLimit:
        """The limit that applies to ``address``."""

    def usage(user: IUserStore) -> Usage:
        """What ``user`` stores now."""

    def fits(user: IUserStore, extra_bytes: int = 0, extra_messages: int = 1) -> bool:
        """True if ``user`` may store ``extra_messages`` more messages of ``extra_bytes``."""


class IRetention(Interface):
    """Retention and legal hold: which messages must outlive a user's request to erase them.

    Callers that erase mail on a user's behalf (POP3 ``expunge``) ask first, and keep what is
    held (hidden from the user where the protocol needs it gone)."""

    def may_erase(address: str, folder: str, message: IStoredMessage) -> bool:
        """False if the message in ``folder`` of ``address`` is held and must be kept."""


class ITransferObserver(Interface):
    """Told by the store before messages are copied or moved between two folders of one
    user, by any client (IMAP COPY and MOVE, later the webmail), so a feature can act on what
    people decide: learning from Junk moves (``ourmail.filters.learning``)."""

    def transferring(
        user: str,
        source_use: str | None,
        target_use: str | None,
        files: Sequence[os.PathLike[str]],
    ) -> Deferred[None]:
        """``files`` (the messages' files, readable until the Deferred fires) are about to go
        from a folder whose RFC 6154 special use is ``source_use`` to one whose special use is
        ``target_use`` (None: no special use).  The store transfers once the Deferred fires,
        so what the observer records before then survives a crash during the transfer; the
        observer handles its own failures (it must not make the transfer fail)."""


class IMailStore(Interface):
    """Where every user's mail lives."""

    def user(address: str) -> IUserStore:
        """The store of a (normalised) address, created on first use."""


@attrs.frozen
class Recipient:
    """What a directory knows of an address (docs/architecture.md#interfaces).  Delivery
    adds ``list``: one of a mailing list's addresses (:class:`IListIntake`), which has no
    mailboxes and nothing for the outbound queue: the list manager takes its mail."""

    kind: Literal["user", "alias", "remote", "unknown", "list"]
    address: str
    #: For an alias: the local users its mail goes to.
    targets: tuple[str, ...] = ()
    #: For an alias: the addresses in other domains its mail is forwarded to.
    forwards: tuple[str, ...] = ()
    #: Only the domain's catch-all (``@domain``) takes it: the address itself is free (a
    #: group or alias may still be made there).
    catch_all: bool = attrs.field(default=False, kw_only=True)

    @property
    def mailboxes(self) -> tuple[str, ...]:
        """The local users whose mailboxes receive mail for this recipient."""
        if self.kind == "alias":
            return self.targets
        return (self.address,) if self.kind == "user" else ()

    @property
    def outbound(self) -> tuple[str, ...]:
        """The addresses the outbound queue must send this recipient's mail to."""
        if self.kind == "alias":
            return self.forwards
        return (self.address,) if self.kind == "remote" else ()


class IPreferences(Interface):
    """Each user's own settings (``ourmail.prefs``): the webmail's signature and the senders
    whose remote images they see, the out-of-office reply the server sends, and the like.
    Values are JSON values (dict, list, str, int, float, bool, None) under short keys that
    the part using them documents; a missing key reads as None.  Reads answer from memory;
    writes are durable (fsync of file and directory) when their Deferred fires."""

    def get(user: str, key: str) -> object:
        """``user``'s value for ``key``, or None."""

    def set(user: str, key: str, value: object) -> Deferred[None]:
        """Keep ``value`` (None removes the key) for ``user``; fires once it is on disk.
        Raises ``ValueError`` at once for a bad key or a value that is not JSON; fails with
        ``ValueError`` when the user's settings would grow too large."""


class IPasswordChanger(Interface):
    """Changes the passwords kept by this server (``accounts.json``, ``ourmail.auth.changer``),
    as ``ourmail user passwd`` does: for the webmail's settings page.  Passwords kept elsewhere
    (an LDAP directory) are not changed here; the caller checks the current password itself,
    through the login (its portal and failed-login throttle)."""

    def manages(user: str) -> bool:
        """Whether ``user``'s password is kept here (a local account), so may be changed."""

    def change(user: str, password: str) -> Deferred[Hashable]:
        """Hash ``password`` (argon2id) and keep it as ``user``'s; fires once it is on disk,
        after which the old password no longer logs in (the login cache notices the new
        hash), with the credential stamp the change gave the account
        (:class:`~ourmail.auth.cache.IStampedChecker`; for local accounts ``(hash, False)``):
        the session that made the change goes on only while the account's stamp is that one
        (``Session.keep_through``).  Fails with ``ValueError`` when ``user`` has no local
        account."""


class IAutoResponder(Interface):
    """Answers mail delivered to a user who is away (the out-of-office reply of
    ``ourmail.vacation``, RFC 3834, RFC 5230).  Delivery tells it of every message that went
    durably into a user's INBOX (not Junk) with a non-null envelope sender."""

    def delivered(mailbox: str, sender: str, head: bytes) -> Deferred[None]:
        """A message from envelope sender ``sender`` is in ``mailbox``'s INBOX; ``head``: its
        first octets (the header section, cut at a limit).  Returns at once; the Deferred
        fires when the reply (if any) is queued, and never fails: errors are logged.
        Delivery does not wait for it."""


class DirectoryUnavailable(Exception):
    """The directory (an LDAP server, say) could not be asked: a temporary failure.  SMTP
    answers ``451 4.4.3``, logins fail temporarily; never a bounce, never a login allowed."""


class ExpansionTooLarge(Exception):
    """A group or forward expands past the most destinations one recipient may have: the
    recipient is refused whole (SMTP ``550 5.2.4``, RFC 3463 §3.3 "mailing list expansion
    problem"), never taken with members left out."""

    def __init__(self, address: str, limit: int) -> None:
        super().__init__(f"{address} expands to more than {limit} addresses")
        self.address = address
        self.limit = limit


class IDirectory(Interface):
    """Resolves recipient addresses for SMTP, LMTP and the outbound queue, and answers the
    questions submission and quota ask of an account.  ``lookup`` fails with
    :class:`DirectoryUnavailable` when the directory cannot be asked; the other methods answer
    from what is at hand, without blocking."""

    def is_local_domain(domain: str) -> bool:
        """True if mail for ``domain`` is delivered here."""

    def lookup(address: str) -> Deferred[Recipient]:
        """What ``address`` is: a local user, an alias (of local users and remote addresses),
        a remote address, or unknown in a local domain."""

    def may_send_as(user: str, address: str) -> bool:
        """Whether the logged-in ``user`` may use ``address`` as sender (own address or alias)."""

    def quota(user: str) -> QuotaLimit | None:
        """The storage limit the directory sets for ``user`` (LDAP ``mailQuota``), or None when
        the account's own, its domain's or the default limit applies."""

    def identities(user: str) -> list[str]:
        """The addresses the logged-in ``user`` may send as (:meth:`may_send_as` holds for
        each): their own address first, then their aliases, as far as the directory knows them
        without asking a server (the webmail's From choice)."""

    def search(text: str, limit: int) -> Deferred[list[Contact]]:
        """At most ``limit`` people and addresses whose address or name contains ``text``
        (address completion); an LDAP directory asks its server with an escaped filter
        (RFC 4515) and bounded size and time.  Fails with :class:`DirectoryUnavailable`."""


@attrs.frozen
class Contact:
    """An address as the directory shows it for completion: ``Name <address>``."""

    address: str
    name: str = ""


#: Why submission refused a message or a recipient (:class:`SubmissionRefusal`).
RefusalReason = Literal["sender", "rate", "size", "recipient", "content", "failed"]


@attrs.frozen
class SubmissionRefusal:
    """What submission did not take: the whole message (``address`` None) or one recipient,
    as an SMTP reply (RFC 5321) with its RFC 3463 status and a ``reason`` a client can show:
    ``sender`` (an envelope sender or From: address the user may not use), ``rate`` (the
    hourly limits), ``size``, ``recipient`` (unknown, full, directory down), ``content`` (the
    filter chain said no) or ``failed`` (delivery or the queue failed: nothing was sent)."""

    address: str | None
    reason: RefusalReason
    code: int
    status: str
    text: str


@attrs.frozen
class SubmissionResult:
    """The outcome of :meth:`ISubmission.submit`: sent (durable) to every recipient, refused
    as a whole, or (when delivery failed for some after the checks passed) sent to
    :attr:`delivered` and not to the recipients of :attr:`refusals`."""

    #: Empty when the message was delivered and queued for every recipient.
    refusals: tuple[SubmissionRefusal, ...] = ()
    #: The Message-ID: field's value the message went out with.
    message_id: str = ""
    #: The recipients it was delivered or queued for (durable), when it went out at all.
    delivered: tuple[str, ...] = ()

    @property
    def sent(self) -> bool:
        return not self.refusals


class ISubmission(Interface):
    """Mail a logged-in user writes outside SMTP (the webmail) goes through the rules of
    SMTP submission (RFC 6409, ``ourmail.smtp.submitter``): sender ownership, the hourly
    sending rates shared with the submission listeners, missing Message-ID:/Date: added, the
    filter chain's checks for submitted mail, local delivery and the outbound queue (DKIM
    signing at enqueue), the contacts book, and a copy in the user's ``\\Sent`` folder."""

    def submit(
        user: str,
        sender: str,
        recipients: Sequence[str],
        message: bytes | os.PathLike[str],
        client: str = "",
    ) -> Deferred[SubmissionResult]:
        """Send ``message`` (CRLF line endings) from ``sender`` to ``recipients`` on behalf
        of ``user``; ``client`` is the user's IP address, for the checks.  A recipient the
        checks refuse refuses the message: nothing is sent.  Fires once every copy is durable
        (delivered or queued) with no refusals; with the refusals and nothing sent; or, when
        delivery itself failed for some recipients, with those refusals and the recipients it
        was sent to (the caller must not send it to those again)."""


@attrs.frozen
class DeliveryResult:
    """What became of one recipient of a message delivered here: an SMTP reply (RFC 5321) with
    its RFC 3463 status, e.g. ``250 2.0.0 delivered`` or ``452 4.2.2 Mailbox full``."""

    address: str
    code: int
    status: str
    text: str

    @property
    def ok(self) -> bool:
        return self.code < 300

    @property
    def reply(self) -> str:
        return f"{self.code} {self.status} {self.text}"


class IOutboundQueue(Interface):
    """Durable, retried delivery to other servers, and the way back for delivery status
    notifications (``ourmail.queue``).  Delivery hands mail for other domains to it."""

    def enqueue(
        sender: str,
        recipients: Sequence[tuple[str, RcptParams]],
        content: bytes | os.PathLike[str],
        mail_params: MailParams,
        utf8: bool,
        forwarded: bool = False,
        verp: bool = False,
        personal: Mapping[str, bytes] | None = None,
        key: str = "",
    ) -> Deferred[str]:
        """Queue ``content`` for ``recipients``; fires with the queue id once the queue files
        are durable (only then may the sender hear ``250``).  ``forwarded``: mail that arrived
        from elsewhere and leaves again (an alias's forwards), which this host signs only as
        the forwarder (:class:`IMessageSigner`), never as its author.  ``verp``: each
        recipient gets its own envelope sender, ``sender`` with ``+local=domain`` of the
        recipient added to its local part (VERP, as Postfix's XVERP), so that a bounce tells
        whom it is for; one transaction per recipient then, and the notifications the queue
        writes about a recipient (RFC 3464) go to its VERP sender.  ``personal`` (with ``verp``):
        header fields (CRLF-terminated) to put on top of one recipient's copy only, such as
        an RFC 8058 one-click ``List-Unsubscribe`` of that member; the queue's DKIM signature
        of that copy covers them (RFC 8058 §4).  ``key`` (letters, digits, ``-._``): queue it
        once; a message queued under the same key in the last days (still queued, or sent)
        is not queued again and its id is given, so a caller that crashed between queueing
        it and recording that can queue it again without sending it twice."""

    def report_delivered(
        sender: str,
        mail_params: MailParams,
        arrival: float,
        content: bytes | os.PathLike[str],
        delivered: Sequence[tuple[str, RcptParams]],
    ) -> Deferred[object]:
        """Queue a "delivered" report (RFC 3461 §5.2.2) for the recipients delivered here that
        asked for one."""


class ILocalDelivery(Interface):
    """Delivery to this server's mailboxes (``ourmail.smtp.delivery``).  The queue hands it
    the recipients of a local domain (a bounce to a local sender, say)."""

    def deliver_queued(
        qid: str,
        sender: str,
        recipients: Sequence[tuple[str, RcptParams]],
        source: os.PathLike[str],
        size: int,
        mail_params: MailParams,
        utf8: bool,
    ) -> Deferred[list[DeliveryResult]]:
        """Check and deliver each recipient as if it came by SMTP; one durable result each, in
        order (an alias's forwards are queued again)."""


class InvalidSRS(Exception):
    """An address in SRS form whose hash does not verify or whose time stamp has expired."""


class ISenderRewriter(Interface):
    """The Sender Rewriting Scheme (``ourmail.srs``): mail forwarded to another domain leaves
    with an envelope sender in our domain, so SPF (RFC 7208) passes at the next hop, and
    bounces to such addresses find their way back to the original sender."""

    def forward(sender: str, domain: str) -> str:
        """The envelope sender for mail from ``sender`` forwarded by an alias of the local
        ``domain``: an SRS0 (or SRS1) address in ``domain``; the null sender and senders in a
        local domain stay as they are."""

    def reverse(address: str) -> str | None:
        """The address an SRS ``address`` stands for (the original sender, or the previous
        forwarder's SRS0 address); None if ``address`` is not in SRS form.  Raises
        :class:`InvalidSRS` for a forged or expired one."""


# -- filters: checks on arriving mail (ourmail/filters, docs/filters.md) ---------------------

#: When a check runs: the client connects, MAIL FROM, each RCPT TO, the end of DATA/BDAT.
Stage = Literal["connect", "mail", "rcpt", "data"]
STAGES: tuple[Stage, ...] = ("connect", "mail", "rcpt", "data")

#: What a check's verdict asks for (see :class:`Verdict`).
Action = Literal["accept", "junk", "tempfail", "reject"]


@attrs.frozen
class AuthResult:
    """One result of an ``Authentication-Results:`` header (RFC 8601 §2.2): ``method=result``
    with an optional reason and ``ptype.property=value`` pairs, e.g. ``spf=pass
    smtp.mailfrom=example.org``."""

    method: str
    result: str
    reason: str = ""
    #: ("smtp.mailfrom", "example.org"), ("header.d", "example.org"), ...
    properties: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Verdict:
    """What one check says.  ``accept`` may still add header fields and results; ``junk``
    files the message into the recipients' Junk folder; ``tempfail`` and ``reject`` refuse
    with an SMTP reply (RFC 5321) and its RFC 3463 status, e.g. ``550 5.7.1 ...``."""

    action: Action = "accept"
    code: int = 0
    status: str = ""
    text: str = ""
    #: Header fields to add, as (name, value) with no line ending; folded by the chain.
    headers: tuple[tuple[str, str], ...] = ()
    #: Results for this host's Authentication-Results header.
    results: tuple[AuthResult, ...] = ()
    #: Why (for the log and the Junk header); a refusal's text is already its reason.
    reason: str = ""
    #: For ``junk``: only these recipients' copies go to Junk (empty: every copy), as the
    #: spam check decides per recipient with per-user thresholds and lists.
    recipients: tuple[str, ...] = ()
    #: For ``junk``: each recipient's own reason, as (recipient, reason), when they differ
    #: (one user's block list is no business of another's); the key may also be a user of
    #: :attr:`MailContext.mailboxes` (an alias's user's own reason).  The chain logs these
    #: per recipient; :attr:`reason` must then say only what every recipient may read, as it is
    #: what a ``junk`` verdict for every copy puts in the shared ``X-Ourmail-Junk`` field.
    reasons: tuple[tuple[str, str], ...] = ()

    @property
    def refuses(self) -> bool:
        return self.action in ("tempfail", "reject")

    @property
    def reply(self) -> str:
        return f"{self.code} {self.status} {self.text}"


ACCEPT = Verdict()


def refuse(code: int, status: str, text: str, *results: AuthResult) -> Verdict:
    """A refusal: ``tempfail`` for a 4xx code, ``reject`` for a 5xx one."""
    action: Action = "tempfail" if code < 500 else "reject"
    return Verdict(action, code, status, text, results=results)


@attrs.define
class MailContext:
    """What the checks of one SMTP session see, stage after stage.  The chain fills it in as
    the session goes on and resets the transaction's part after each message."""

    #: The client's IP address (text), and the listener's name (``smtp``, ``submission``, ``lmtp``).
    client_address: str
    listener: str = "smtp"
    helo: str | None = None
    #: MAIL FROM (``""`` for the null sender), None before MAIL.
    sender: str | None = None
    #: The recipients accepted so far; at ``rcpt`` the one being checked is :attr:`recipient`.
    recipients: list[str] = attrs.Factory(list)
    recipient: str | None = None
    #: Each accepted recipient's local mailboxes (:attr:`Recipient.mailboxes`: an alias's
    #: users), filled by the protocol as it accepts it; a recipient not here (a remote one,
    #: or a protocol that does not know) is its own.  Per-user settings (the spam check's)
    #: belong to these mailboxes' owners, not to an alias.
    mailboxes: dict[str, tuple[str, ...]] = attrs.Factory(dict)
    #: The logged-in user (submission), or None.
    authenticated: str | None = None
    #: The listener trusts this mail (submission, LMTP, unless check_submission/check_lmtp):
    #: only the checks whose ``trusted`` is true run.
    trusted: bool = False
    #: At ``data``: the message as it will be stored (this host's Received: first), as bytes
    #: or the path of a file holding it.
    content: bytes | os.PathLike[str] | None = None
    #: Results of the checks so far in this transaction (DMARC reads SPF's and DKIM's).
    results: list[AuthResult] = attrs.Factory(list)
    #: Per-transaction notes of the checks, by check name (e.g. SPF's verdict for DMARC).
    notes: dict[str, object] = attrs.Factory(dict)

    def owners(self, recipient: str) -> tuple[str, ...]:
        """Whose settings hold for ``recipient``: its mailboxes' users, else itself."""
        return self.mailboxes.get(recipient) or (recipient,)

    def message(self) -> bytes:
        """The message at ``data`` (reads the file when it is one; call off the reactor for a
        large one)."""
        if self.content is None:
            raise ValueError("the message is only known at the data stage")
        if isinstance(self.content, bytes):
            return self.content
        with open(self.content, "rb") as f:
            return f.read()

    def new_transaction(self) -> None:
        """Forget the last message's envelope, its recipients' mailboxes, content, results and
        notes."""
        self.sender, self.recipients, self.recipient, self.content = None, [], None, None
        self.mailboxes = {}
        self.results, self.notes = [], {}


class ICheck(Interface):
    """One check of the filter chain (SPF, DKIM, DNSBL, an antivirus, yours).

    The chain calls :meth:`check` at each stage the check names, in the configured order,
    and gives up waiting after :attr:`timeout` seconds; a failure or time-out is answered by
    :attr:`on_error` and logged.  A check must not block the reactor: network and CPU-heavy
    work returns a Deferred (``twisted.names``, ``deferToThread``)."""

    name = Attribute("Short name used in ourmail.toml, the log and `ourmail filters list`.")
    stages = Attribute("The stages (a collection of Stage) at which check() is called.")
    timeout = Attribute("Seconds the chain waits for a verdict.")
    on_error = Attribute(
        'What a failure or time-out means: "accept" (carry on, logged) or "tempfail" (451).'
    )
    trusted = Attribute(
        "Whether the check also runs on mail that submission and LMTP trust (an antivirus "
        "does; SPF does not).  Other checks run there only with check_submission/check_lmtp."
    )

    def check(stage: Stage, context: MailContext) -> Deferred[Verdict]:
        """The verdict on ``context`` at ``stage``."""


@attrs.define
class ChainOutcome:
    """What one stage of the filter chain decided: a refusal (or None), the reasons to file
    the message into Junk (none: the inbox, unless listed in ``junk_recipients``), and the
    header fields the checks add."""

    refusal: Verdict | None = None
    junk: list[str] = attrs.Factory(list)
    headers: list[tuple[str, str]] = attrs.Factory(list)
    #: Recipients whose copies alone go to Junk (a ``junk`` verdict naming recipients).
    junk_recipients: list[str] = attrs.Factory(list)


class IFilterChain(Interface):
    """The ordered checks of one server (``ourmail.filters.chain``), as the SMTP session
    sees them."""

    authserv_id = Attribute("This host's id in Authentication-Results (RFC 8601 §2.5).")

    def runs_at(stage: Stage, trusted: bool = False) -> bool:
        """Whether any check runs at ``stage`` (on mail the listener trusts, if ``trusted``)."""

    def run(stage: Stage, context: MailContext) -> Deferred[ChainOutcome]:
        """Run the checks of ``stage`` in order; their results join ``context.results``."""

    def strip(head: bytes) -> bytes:
        """The header section ``head`` without Authentication-Results fields that claim
        this host's authserv-id (RFC 8601 §5: a sender cannot forge our verdicts), and
        without the fields the checks write themselves (their ``replaces_fields``)."""

    def fields(context: MailContext, outcome: ChainOutcome) -> bytes:
        """The header fields to put on top of the message: Authentication-Results with
        every result of the transaction, then the checks' own fields (CRLF-terminated)."""

    def filed(
        context: MailContext, outcome: ChainOutcome, mailboxes: Mapping[str, Sequence[str]]
    ) -> None:
        """The message of ``context`` was delivered into the Junk folder of each of
        ``mailboxes`` (mailbox -> the recipients of the transaction whose mail it is), for
        the reasons in ``outcome.junk`` or those of a verdict naming those recipients (for
        the filter log)."""


@attrs.frozen
class FilterEvent:
    """One entry of the filter log (``ourmail log filter``): a refusal or a Junk filing."""

    #: POSIX time.
    at: float
    #: ``reject``, ``tempfail`` or ``junk``.
    action: str
    #: The stage that decided (``connect``, ``mail``, ``rcpt``, ``data``).
    stage: str
    #: The check that decided (for Junk, every check that asked, comma-separated).
    check: str
    #: The SMTP reply of a refusal, or the reasons for Junk.
    reason: str
    client_address: str
    #: The recipient it concerns; None at connect and MAIL (recorded under the client address).
    recipient: str | None = None
    sender: str | None = None
    message_id: str | None = None


class IFilterLog(Interface):
    """Where the filter chain records what it refused or filed into Junk, per recipient
    (``ourmail.filters.filterlog``).  It never blocks: events are written in batches off the
    reactor thread."""

    def record(events: Sequence[FilterEvent]) -> None:
        """Queue ``events`` for writing."""


@attrs.frozen
class FilterEnvironment:
    """What a check factory may use to build its check."""

    #: A ``twisted.internet.interfaces.IResolver`` using the ``[dns] servers``.
    resolver: object
    #: The reactor (timers, threads).
    reactor: object
    #: This host's name: the authserv-id of Authentication-Results, the DKIM/ARC signer's host.
    hostname: str
    #: The local mail domains.
    domains: tuple[str, ...]
    #: ``<data>/filters``: a check keeps state across restarts in a subdirectory named after
    #: itself, made on first use.
    state_dir: os.PathLike[str]
    #: Where reports (DMARC aggregate, TLS-RPT) are sent from; None when there is no queue.
    queue: IOutboundQueue | None = None


class ICheckFactory(Interface):
    """Makes a check from its ``[filters.check.NAME]`` options.  Built-in factories are named
    in ``chain``; a third party's is named ``package.module:factory``."""

    name = Attribute("The check's default name.")

    def build(options: Mapping[str, object], env: FilterEnvironment) -> ICheck:
        """The check; raise ``ValueError`` with a clear message for a bad option (the server
        then refuses to start with that line)."""


class ISpamLearner(Interface):
    """Teaches the spam scanner what people decide (ourmail/filters, docs/filters.md): a
    message moved into Junk is spam, one moved out of Junk (not to Trash) is ham."""

    def learn(user: str, message: bytes, spam: bool) -> Deferred[None]:
        """Tell the scanner that ``message``, as ``user`` received it, is spam (or ham).
        Fails when the scanner could not be told (down, refused): the caller keeps the
        request and tries again later."""


class IContactBook(Interface):
    """Remembers whom each user writes to (``ourmail.filters.spamprefs``): the spam check
    never files mail from a user's contacts into Junk by score alone.  Submission tells it,
    after the message is delivered or queued."""

    def sent(user: str, recipients: Sequence[str]) -> Deferred[None]:
        """``user`` (logged in) sent a message to ``recipients``; fires once recorded."""


# -- outbound authentication: DKIM signing and ARC sealing (ourmail/secure, docs/filters.md) --


class IMessageSigner(Interface):
    """DKIM signing (RFC 6376, RFC 8463) of the mail leaving through the outbound queue; the
    queue signs once, when it stores the message."""

    def signature(
        content: bytes, sender: str, forwarded: bool, body_hash: bytes | None = None
    ) -> bytes:
        """The ``DKIM-Signature:`` fields to put on top of ``content`` (CRLF-terminated), or
        ``b""`` when this host holds no key that may sign it.  ``sender`` is the envelope
        sender; ``forwarded`` mail is signed only with the host name's domain.  With a
        ``body_hash`` (:meth:`body_hash` of the whole message), ``content`` may be the header
        section alone: many copies of one body with different header fields (VERP copies)
        are signed without hashing the body each time.  CPU work that blocks: call it in a
        thread."""

    def body_hash(content: bytes) -> bytes:
        """The hash of ``content``'s canonicalized body (RFC 6376 §3.7), for
        :meth:`signature`.  Blocking."""

    def sign(content: bytes, sender: str, forwarded: bool) -> Deferred[bytes]:
        """:meth:`signature` in a thread."""


class IForwardSealer(Interface):
    """ARC sealing (RFC 8617 §5.1) of mail that this host forwards (an alias's forwards,
    mailing lists): one ARC set whose ARC-Authentication-Results repeat this host's own
    Authentication-Results at the top of the message."""

    def seal(content: bytes | os.PathLike[str]) -> Deferred[bytes]:
        """The whole message with an ARC set on top; the message unchanged when there is
        nothing to seal (no key, no Authentication-Results of ours, a chain already broken)."""


class UnknownUser(UnauthorizedLogin):
    """A checker's refusal that says the login name is no account at all (not a wrong
    password).  Clients never see the difference (both are "authentication failed"); the
    ``login`` log event does (``result=unknown-user``, docs/logging.md).  A checker that
    cannot tell raises plain ``UnauthorizedLogin`` (logged as ``bad-password``)."""


@attrs.frozen
class Actor:
    """Who makes an admin change, and from where: the audit log's *who* and *client*."""

    #: The admin's address (the web) or the Unix user running ``ourmail`` (the CLI).
    who: str
    #: ``"web"`` (the admin console, a confirmation page), ``"cli"`` (the ``ourmail``
    #: commands) or ``"mail"`` (a reply to a list's moderation notice).
    via: Literal["web", "cli", "mail"]
    #: The client's IP address for the web; empty for the CLI.
    client: str = ""


class IAuditLog(Interface):
    """The audit log an auditor reads (``<data>/log/audit.log``, docs/admin-console.md): one
    JSON line per admin change and per refused admin request, never with a password."""

    def record(actor: Actor, action: str, target: str, result: str, detail: str = "") -> None:
        """Append one line (UTC time, who, via, client, action, target, result, detail) and
        make it durable (fsync) before returning.  Blocks on the disk: call it in a thread."""

    def ready() -> None:
        """Raise ``OSError`` when a line could not be written now (the file or its folder not
        writable, a full disk is found only by :meth:`record`): a change is refused then, so
        that none is made without its line.  Blocks on the disk: call it in a thread."""


class AccountRefused(ValueError):
    """An account change that cannot be done.  ``code`` names the reason for a program (the
    admin console shows its own translated text); ``str()`` is the English message of the
    ``ourmail`` commands; ``subject`` is the address or domain concerned."""

    def __init__(self, code: str, message: str, subject: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.subject = subject


@attrs.frozen
class UserPage:
    """One page of a user listing: the addresses shown, how many match in all, and the
    position of the first shown among them."""

    addresses: tuple[str, ...]
    total: int
    offset: int


@attrs.frozen
class UserQuota:
    """A user's storage limit, whether it is their own (not the domain's or default), and
    what they use."""

    limit: QuotaLimit
    own: bool
    used: Usage


class IAccountAdmin(Interface):
    """The local accounts and aliases as the admin console manages them, through the same
    code as the ``ourmail user`` and ``ourmail alias`` commands (``ourmail.manage.accountops``).

    Listings answer from a sorted index kept by the accounts file's modification time, so a
    page of 200,000 users is not sorted per request.  Changes are checked, made durable and
    audit-logged (:class:`IAuditLog`, with ``actor``) before their Deferred fires; a change
    that cannot be done fails with :class:`AccountRefused` (logged too).  Who may ask for
    what is the caller's business: the admin console checks an admin's domains first."""

    def min_password() -> int:
        """The fewest characters a password may have."""

    def domains() -> Deferred[list[str]]:
        """The domains served: the configured ones, then those added later."""

    def address(text: str) -> Deferred[str]:
        """``text`` as a normalised address in a served domain (a bare local part is in the
        primary domain); fails with :class:`AccountRefused` (``bad-address``, ``not-served``)."""

    def in_use(addresses: Sequence[str]) -> Deferred[list[str]]:
        """Those of ``addresses`` (normalised) that are a user, alias or group already."""

    def count(domains: Sequence[str] | None) -> Deferred[tuple[int, int]]:
        """How many users and aliases there are in ``domains`` (None: all)."""

    def users(
        domains: Sequence[str] | None, text: str, offset: int, limit: int
    ) -> Deferred[UserPage]:
        """At most ``limit`` users of ``domains`` (None: all) whose address contains ``text``
        (lower-cased), in address order, from the ``offset``-th match."""

    def aliases(domains: Sequence[str] | None) -> Deferred[list[tuple[str, tuple[str, ...]]]]:
        """The aliases whose address is in ``domains`` (None: all), each with its targets,
        in address order."""

    def add_user(actor: Actor, address: str, password: str) -> Deferred[str]:
        """Create a local account; fires with its normalised address."""

    def set_password(actor: Actor, address: str, password: str) -> Deferred[None]:
        """Give an existing account a new password."""

    def delete_user(actor: Actor, address: str) -> Deferred[None]:
        """Delete an account; its mail is kept in the store."""

    def quota(address: str) -> Deferred[UserQuota]:
        """An existing account's limit and usage."""

    def set_quota(actor: Actor, address: str, limit: QuotaLimit | None) -> Deferred[None]:
        """Give an account its own limit (None: the domain's or default again)."""

    def set_alias(actor: Actor, address: str, targets: Sequence[str]) -> Deferred[str]:
        """Add or replace an alias (``@domain``: the domain's catch-all) delivering to local
        users or forwarding elsewhere; fires with its normalised address."""

    def delete_alias(actor: Actor, address: str) -> Deferred[None]:
        """Delete an alias."""


# -- the admin console's operations pages (docs/admin-console.md) ----------------------------


class QueueRefused(ValueError):
    """A queue change or view that cannot be done.  ``code`` names the reason for a program
    (``bad-id``, ``no-such-message``, ``audit``); ``str()`` is the English message of the
    ``ourmail queue`` commands; ``subject`` is the message id concerned."""

    def __init__(self, code: str, message: str, subject: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.subject = subject


@attrs.frozen
class WaitingRecipient:
    """A queued message's recipient and what happened at its last attempt."""

    address: str
    #: ``pending``, ``delivered``, ``relayed`` or ``failed``.
    state: str
    #: RFC 3463 status of the last attempt ("" before the first).
    status: str
    #: The receiving server's reply, or why it could not be reached.
    diagnostic: str


@attrs.frozen
class QueuedMessage:
    """One queued message as the admin console lists it (never its content)."""

    id: str
    size: int
    #: POSIX time of its arrival.
    created: float
    #: "" is the null reverse-path (RFC 5321 §4.5.5).
    sender: str
    #: ``new`` (not tried yet), ``retry`` (at ``next_attempt``) or ``held``.
    state: str
    next_attempt: float
    attempts: int
    #: The recipients still waiting.
    pending: tuple[WaitingRecipient, ...]
    #: VERP: each recipient is sent with its own envelope sender (``sender`` with
    #: ``+local=domain`` of the recipient), a mailing list's bounce address.
    verp: bool = False


@attrs.frozen
class QueuePage:
    """One page of the queue: the messages shown, how many match in all, and the position
    of the first shown among them."""

    messages: tuple[QueuedMessage, ...]
    total: int
    offset: int


@attrs.frozen
class QueuedDetail:
    """One queued message in full: every recipient and the header section (as text, decoded
    with replacement characters; never the body)."""

    message: QueuedMessage
    recipients: tuple[WaitingRecipient, ...]
    header: str


class IQueueAdmin(Interface):
    """The outbound queue as the admin console sees and steers it, through the same code as
    the ``ourmail queue`` commands (``ourmail.manage.queueops``).  Files are read in worker
    threads; every change is made under the queue lock, made durable and audit-logged
    (:class:`IAuditLog`, with ``actor``) before its Deferred fires."""

    def page(text: str, offset: int, limit: int) -> Deferred[QueuePage]:
        """At most ``limit`` messages, oldest first, whose sender or a pending recipient
        contains ``text`` (case does not matter; "" for all), from the ``offset``-th match."""

    def message(qid: str) -> Deferred[QueuedDetail]:
        """One message; fails with :class:`QueueRefused` (``bad-id``, ``no-such-message``)."""

    def change(actor: Actor, action: str, qid: str) -> Deferred[None]:
        """``retry``, ``hold``, ``release`` or ``delete`` one message (delete sends no notice);
        fails with :class:`QueueRefused` (logged as refused)."""


@attrs.frozen
class FilterLogPage:
    """One page of the filter log, newest first, and whether older entries follow."""

    events: tuple[FilterEvent, ...]
    offset: int
    more: bool
    #: The search took too long and was stopped: no entries, narrow it.
    stopped: bool = False


class IFilterLogReader(Interface):
    """The filter log (what :class:`IFilterLog` recorded) as the admin console reads it."""

    def page(
        domains: Sequence[str] | None,
        action: str,
        check: str,
        address: str,
        offset: int,
        limit: int,
    ) -> Deferred[FilterLogPage]:
        """At most ``limit`` entries, newest first, from the ``offset``-th: only those whose
        recipient is in ``domains`` (None: every entry, those without a recipient too), of
        ``action`` and by ``check`` when given ("": any), whose recipient or sender contains
        ``address`` when given (case does not matter)."""


@attrs.frozen
class ShardRoot:
    """One shard root: its shards, its users, the bytes of their mail (None: not counted)."""

    root: str
    #: The shard numbers as ``ourmail shard list`` prints them (``00-7f, 90``).
    shards: str
    users: int
    bytes: int | None


class IShardReport(Interface):
    """Where users' mail is stored, as ``ourmail shard list`` reports it."""

    def roots(count_bytes: bool) -> Deferred[list[ShardRoot]]:
        """Every shard root with its shards and users, in a worker thread; the bytes only
        when ``count_bytes`` (it walks every file of every mailbox)."""


@attrs.frozen
class GroupInfo:
    """A local group: its address, display name and members (as stored, not expanded)."""

    address: str
    name: str
    members: tuple[str, ...]


@attrs.frozen
class Forwarding:
    """Where a user's mail is forwarded (empty: nowhere) and whether a copy is kept."""

    targets: tuple[str, ...] = ()
    keep: bool = True


class IRoutingAdmin(Interface):
    """Local groups and users' forwarding as the admin console manages them, through the same
    code as the ``ourmail group`` and ``ourmail user forward`` commands
    (``ourmail.manage.groupops``).  Changes are checked, made durable and audit-logged
    (``ok`` or ``refused: <code>``) before their Deferred fires; one that cannot be made fails
    with :class:`AccountRefused`."""

    def groups(domains: Sequence[str] | None) -> Deferred[list[GroupInfo]]:
        """The groups of ``domains`` (None: every domain), in address order."""

    def add_group(actor: Actor, address: str, name: str, members: Sequence[str]) -> Deferred[str]:
        """Create a group; fires with its normalised address."""

    def delete_group(actor: Actor, address: str) -> Deferred[None]:
        """Delete a group."""

    def add_members(actor: Actor, address: str, members: Sequence[str]) -> Deferred[None]:
        """Add members (users, groups, aliases or addresses elsewhere) to a group."""

    def remove_members(actor: Actor, address: str, members: Sequence[str]) -> Deferred[None]:
        """Remove members from a group."""

    def forwarding(address: str) -> Deferred[Forwarding]:
        """Where a user's mail is forwarded."""

    def set_forwarding(
        actor: Actor, address: str, targets: Sequence[str] | None, keep: bool
    ) -> Deferred[None]:
        """Forward a user's mail to ``targets`` (None: stop), keeping a copy or not."""


class AccountDisabled(UnauthorizedLogin):
    """A checker's refusal of the right password of a disabled account.  Clients see it as a
    wrong password (a disabled account's existence is not revealed); the ``login`` log event
    says ``result=account-disabled`` (docs/logging.md), which fail2ban does not count."""


@attrs.frozen
class DisabledState:
    """Why and since when an account is disabled (``ourmail user disable``)."""

    #: When it was disabled, UTC, ISO 8601 to the second.
    since: str
    #: The admin's reason, as typed (may be empty).
    reason: str


class IAccountDisabling(Interface):
    """Disabling and enabling local accounts, for the admin console, through the same code as
    ``ourmail user disable`` / ``enable`` (``ourmail.manage.accountops``).  A disabled account
    cannot log in anywhere, and its open sessions (IMAP, POP3, submission, web) are ended;
    mail to it is still accepted (docs/admin-console.md#disabled-accounts).  Changes are
    durable and audit-logged before their Deferred fires; a change that cannot be done fails
    with :class:`AccountRefused`."""

    def state(address: str) -> Deferred[DisabledState | None]:
        """Whether an existing account is disabled (None: it is not)."""

    def disabled_among(addresses: Sequence[str]) -> Deferred[frozenset[str]]:
        """Those of ``addresses`` that are disabled (for a listing's mark)."""

    def disable(actor: Actor, address: str, reason: str) -> Deferred[None]:
        """Disable an existing account (again: the reason is replaced)."""

    def enable(actor: Actor, address: str) -> Deferred[None]:
        """Let a disabled account log in again."""


# -- domains, their DNS records and the certificate (the admin console, issue 17 points 2 and 4)


@attrs.frozen
class DkimKeyInfo:
    """One DKIM key of a domain, as the admin console lists it."""

    selector: str
    #: ``rsa`` or ``ed25519``.
    algorithm: str
    #: Signs mail now (False: retired, its record kept published for a while).
    signing: bool
    #: False when the key file cannot be read (empty, not a key, no permission): logged.
    readable: bool = True


@attrs.frozen
class DomainInfo:
    """A domain served here: where it comes from and its DKIM keys."""

    name: str
    #: ``configuration`` (``ourmail.toml``) or ``added`` (``ourmail domain add``, the console).
    source: Literal["configuration", "added"]
    #: The primary domain (bare local parts at login belong to it).
    primary: bool
    keys: tuple[DkimKeyInfo, ...]


@attrs.frozen
class DnsRecordRow:
    """One record a domain should publish (``ourmail dns records``), in plain text."""

    #: ``MX``, ``A``, ``AAAA``, ``PTR``, ``TXT``, ``SRV`` or ``CNAME``.
    type: str
    name: str
    #: The value in one line (a TXT record's whole text).
    value: str
    #: What the check looks at: ``mx``, ``address``, ``spf``, ``dkim``, ``dmarc``,
    #: ``mta-sts``, ``tls-rpt``, ``srv``, ``alias``, ``ptr``.
    kind: str
    #: Why it is needed (one line, English, with the RFC).
    purpose: str
    #: Missing is a failure (else a warning).
    required: bool


@attrs.frozen
class DnsRecords:
    """A domain's records and the BIND zone-file snippet of them."""

    domain: str
    hostname: str
    rows: tuple[DnsRecordRow, ...]
    zone: str
    #: Whether a DKIM key signs for the domain (none: the check fails on DKIM).
    has_dkim: bool


#: ``unknown``: DNS could not be asked (time-out, server failure, refusal).
DnsStatus = Literal["pass", "warn", "fail", "unknown"]


@attrs.frozen
class DnsCheckRow:
    """The live check of one record (``ourmail dns check``)."""

    record: DnsRecordRow
    status: DnsStatus
    #: Why, in one line (English, as ``ourmail dns check`` prints it).
    reason: str
    #: What DNS holds there now.
    found: tuple[str, ...] = ()


class IDomainAdmin(Interface):
    """The domains served here, their DKIM keys and DNS records, as the admin console
    manages them: through the code of ``ourmail domain add``, ``ourmail dkim gen`` and
    ``ourmail dns records|check`` (``ourmail.manage.domainops``, ``ourmail.dns.api``).

    Changes are made durable and audit-logged (:class:`IAuditLog`) before their Deferred
    fires; one that cannot be made fails with :class:`AccountRefused` (logged too).  Who may
    ask for what is the caller's business."""

    def domains() -> Deferred[list[DomainInfo]]:
        """Every domain served, the configured ones first (the primary first of all)."""

    def add_domain(actor: Actor, name: str) -> Deferred[str]:
        """Serve another domain; fires with its normalised name (``exists``, ``configured``,
        ``bad-domain``: refused)."""

    def make_dkim_key(actor: Actor, domain: str) -> Deferred[tuple[DkimKeyInfo, ...]]:
        """Make a DKIM key for a served domain that has none (``has-key``: it has one);
        fires with the domain's keys."""

    def records(domain: str, ask_dns: bool = True) -> Deferred[DnsRecords]:
        """The records ``domain`` should publish, with the host name's addresses as DNS
        gives them within a second or two (else a placeholder), kept a minute; without
        ``ask_dns`` only those kept (a page refusing a check asks DNS nothing)."""

    def check(domain: str) -> Deferred[list[DnsCheckRow]]:
        """Each record of ``domain`` checked against DNS now, one row per record; fires
        within a bounded time (a record DNS did not answer for in time: ``unknown``)."""


@attrs.frozen
class ListenerCertificate:
    """The certificate one TLS listener serves."""

    listener: str
    #: ``ACME``, ``self-signed`` or ``[tls] files`` (or ``endpoint`` for an ``ssl:`` one).
    source: str
    path: str
    #: Its subject alternative names (the subject's common name when it has none).
    names: tuple[str, ...] = ()
    issuer: str = ""
    #: notAfter (RFC 5280 §4.1.2.5), UTC, ISO 8601; empty when the file cannot be read.
    not_after: str = ""
    days_left: int = 0
    self_signed: bool = False


@attrs.frozen
class AcmeStatus:
    """``[acme]`` as ``ourmail cert status`` shows it."""

    enabled: bool
    directory: str = ""
    renew_days: int = 0
    #: The names the certificate must carry, and those added when they validate.
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    #: Optional names left out: (name, when validation failed, when it is tried again), UTC.
    left_out: tuple[tuple[str, str, str], ...] = ()
    #: When the certificate is due for renewal (UTC, ISO 8601; empty: no certificate yet).
    renew_after: str = ""
    #: Why a new certificate is needed now (empty: the current one will do).
    renew_reason: str = ""
    #: ``ourmail cert renew`` asked the running server for a renewal.
    renewal_asked: bool = False


class ICertificateStatus(Interface):
    """The TLS certificates the listeners serve and the ACME state, from the code of
    ``ourmail cert status`` (``ourmail.secure.certstatus``)."""

    def listeners() -> Deferred[list[ListenerCertificate]]:
        """Each TLS listener (STARTTLS or implicit) and the certificate it serves now."""

    def acme() -> Deferred[AcmeStatus]:
        """The ACME state (``enabled`` False when ``[acme]`` is off)."""


#: The set-up wizard's steps, in order (docs/setup-wizard.md).
SETUP_STEPS = ("password", "names", "users", "dkim", "done")


@attrs.frozen
class PublishRecord:
    """A DNS record the set-up wizard asks the admin to publish."""

    name: str
    type: str
    value: str


@attrs.frozen
class SetupState:
    """Where the set-up wizard stands, as kept in ``<data>/setup.json``."""

    #: Set-up is not finished: ``/setup`` is open.
    open: bool = False
    #: The steps done so far (of :data:`SETUP_STEPS`).
    done: tuple[str, ...] = ()
    #: The host name and mail domains chosen (empty before that step).
    hostname: str = ""
    domains: tuple[str, ...] = ()
    #: The users created in the wizard.
    users: tuple[str, ...] = ()
    #: How the chosen names reached the configuration: ``written`` (into ``ourmail.toml``
    #: in the data folder) or ``manual`` (a file elsewhere: the admin copies the lines shown).
    config: str = ""
    #: The lines to put into the configuration (shown when ``config`` is ``manual``).
    config_lines: str = ""
    #: What takes effect only after a restart when the names step was done (``hostname``,
    #: ``primary``, ``removed:<domain>``); :meth:`ISetupWizard.restart_needed` says what
    #: still does.
    restart: tuple[str, ...] = ()
    #: The DKIM records made in the wizard.
    dkim: tuple[PublishRecord, ...] = ()

    def next_step(self) -> str:
        """The first step not done yet."""
        return next((s for s in SETUP_STEPS if s not in self.done), SETUP_STEPS[-1])


class ISetupWizard(Interface):
    """The first-run set-up wizard's way below the web (``/setup``, docs/setup-wizard.md):
    its state, kept durably in the data folder, and its changes, each made through the code
    of the matching ``ourmail`` command (accounts, domains, DKIM keys), written to the
    configuration file where the wizard sets something there, and audit-logged
    (:class:`IAuditLog`, with ``actor``) before its Deferred fires.  A change that cannot be
    done fails with :class:`AccountRefused` (logged too); once set-up is finished every change
    fails with code ``closed``."""

    def state() -> SetupState:
        """The wizard's state now (kept in memory; no disk access)."""

    def common_list() -> bytes:
        """The common passwords the password rules refuse, as the file the meter reads."""

    def set_password(
        actor: Actor, address: str, password: str
    ) -> Deferred[tuple[SetupState, Hashable]]:
        """Step ``password``: give the admin's account the password they chose (replacing the
        one-time password), under the wizard's password rules; fires with the new state and
        the account's credential stamp as the change left it (for ``Session.keep_through``)."""

    def set_names(actor: Actor, domains: Sequence[str], hostname: str) -> Deferred[SetupState]:
        """Step ``names``: serve ``domains`` (the first is the primary domain) at once, and
        write them and ``hostname`` into the configuration."""

    def add_user(actor: Actor, address: str, password: str) -> Deferred[SetupState]:
        """Step ``users``: create a user in one of the chosen domains, under the password
        rules."""

    def users_done(actor: Actor) -> Deferred[SetupState]:
        """Step ``users``: no more users for now."""

    def make_dkim(actor: Actor) -> Deferred[SetupState]:
        """Step ``dkim``: a DKIM key for each chosen domain that has none."""

    def records(domain: str) -> Deferred[list[PublishRecord]]:
        """The MX, SPF, DKIM and DMARC records ``domain`` needs, for the summary."""

    def finish(actor: Actor) -> Deferred[SetupState]:
        """Close the wizard for good (refused with ``no-dkim`` while a chosen domain has no
        DKIM key)."""

    def restart_needed() -> tuple[str, ...]:
        """What of the chosen names the running server does not use yet, compared with the
        settings it started with (no disk access): ``hostname``, ``primary`` and
        ``removed:<domain>`` (a domain left out of the configuration)."""


@attrs.frozen
class DirectoryPage:
    """One page of the directory's users (``IDirectoryUsers.users``): the main addresses
    shown, how many match in all, the position of the first shown (from 0), whether ``total``
    is every match (False: a search stopped at its size limit), and when the list was read
    (seconds since the epoch; a search is read live, now)."""

    addresses: tuple[str, ...]
    total: int
    offset: int
    complete: bool
    as_of: float


@attrs.frozen
class DirectoryPerson:
    """What the directory says of one user: main address, name, extra addresses, the groups
    naming them (bounded), the storage limit it sets (bytes; None: none), whether the entry is
    disabled, and what they store here."""

    address: str
    name: str
    alternates: tuple[str, ...]
    groups: tuple[str, ...]
    quota: int | None
    disabled: bool
    used: Usage


class IDirectoryUsers(Interface):
    """The users a directory (LDAP) holds, read-only, as the admin console lists them.

    Listings page through an index of the users' main addresses, read from the directory in
    pages (RFC 2696) and kept for a few minutes, so that paging is stable (no gaps, no
    repeats) and a page never asks the directory for every entry.  A search with ``text``
    asks the directory itself, escaped (RFC 4515 §3) and size-limited.  When the directory
    cannot be asked: :class:`DirectoryUnavailable`."""

    def count(domains: Sequence[str]) -> Deferred[int]:
        """How many directory users have their main address in ``domains``."""

    def users(domains: Sequence[str], text: str, after: str, limit: int) -> Deferred[DirectoryPage]:
        """At most ``limit`` users of ``domains`` in address order, those sorting after the
        address ``after`` ("": from the first); with ``text``, those whose address, extra
        address or name contains it.  Paging by the last address shown, not by a position,
        keeps pages without gaps or repeats when the list is read again between them."""

    def person(address: str) -> Deferred[DirectoryPerson | None]:
        """The directory's entry with this main address (None: there is none)."""


class DirectoryBusy(DirectoryUnavailable):
    """The directory's users are still being read (the first reading after a start): a page
    asking now is answered without them, and the reading goes on."""


# -- the vault (docs/vault.md) ---------------------------------------------------------------


@attrs.frozen
class VaultEnvelope:
    """What the vault keeps beside a message: how it came, from whom, for whom."""

    #: ``"smtp"`` (MX), ``"lmtp"``, ``"submission"``, ``"queue"`` (local delivery from the
    #: outbound queue), ``"imap-append"`` (APPEND into Sent), ``"webmail"``, ``"restore"``.
    via: str
    #: The envelope sender ("" for a bounce).
    sender: str
    #: The envelope recipients as given (RCPT TO), for an APPEND the message's own addressees.
    recipients: tuple[str, ...] = ()
    #: The local mailboxes the message went to (after aliases and groups).
    mailboxes: tuple[str, ...] = ()
    #: The client's IP address ("" when there is none: a command, the queue).
    client: str = ""
    #: The logged-in user who sent or appended it ("" for mail from elsewhere).
    user: str = ""
    #: The transaction's id in the server's log.
    id: str = ""
    #: When it arrived (seconds since the epoch).
    arrival: float = 0.0

    def addresses(self) -> tuple[str, ...]:
        """Every address the message concerns: sender, recipients, mailboxes and user."""
        seen = (self.sender, *self.recipients, *self.mailboxes, self.user)
        return tuple(dict.fromkeys(a.lower() for a in seen if a))


class IVault(Interface):
    """Where every message that enters or leaves the organisation is kept (docs/vault.md)."""

    def capture(source: MessageSource, envelope: VaultEnvelope) -> Deferred[int]:
        """Keep one copy of the message with ``envelope``; fires with its record number once
        it is durable.  Joins the store's group commit: call it *before* storing the
        message's mailbox copies (in the same reactor turn), so that the copy is written
        no later than they are, and no mailbox ever holds a message the vault lacks."""


class ICommitParticipant(Interface):
    """A durable writer that joins the store's group commit (the vault): its items are
    written in the committer's worker thread before any mailbox file of the same batch is
    placed (and flushed then, if it asks: :meth:`flush`); the batch's one ``syncfs`` makes
    them durable with the mailbox files and journals."""

    def write(items: Sequence[object]) -> Sequence[object]:
        """Worker thread: write ``items`` (no flush); one result per item, in order.  An
        exception fails the whole batch (no mailbox file of it is placed)."""

    def directory() -> os.PathLike[str]:
        """A folder on the filesystem written to (``syncfs`` target)."""

    def flush() -> None:
        """Worker thread, right after :meth:`write` and before any mailbox file of the
        batch is placed: make what it wrote durable now if it must be so before the mailbox
        files (where ``syncfs`` is missing it must; otherwise the batch's ``syncfs`` covers
        it, and only a power cut during that ``syncfs`` could keep a placed file and lose
        the items)."""


class ICommitGroup(Interface):
    """The store's group commit (``MaildirStore.committer``), which other writers join."""

    def join(participant: ICommitParticipant, item: object) -> Deferred[object]:
        """Write ``item`` with ``participant`` in the next batch; fires with its result from
        :meth:`ICommitParticipant.write` once the batch is durable."""


@attrs.frozen
class VaultDocument:
    """What the vault's search index is given per captured message (parsed by the vault, so
    an index elsewhere, a search cluster, needs no MIME parser)."""

    seq: int
    time: float
    envelope: VaultEnvelope
    sender: str
    recipients: tuple[str, ...]
    subject: str
    message_id: str
    date: float | None
    size: int
    attachments: tuple[str, ...]
    #: The text of the message's text parts, cut at the index's limit.
    text: str


@attrs.frozen
class VaultQuery:
    """A vault search: every given criterion must hold (empty ones are not asked)."""

    sender: str = ""
    recipient: str = ""
    #: Any address: sender, recipient, a mailbox or the logged-in user.
    address: str = ""
    start: float | None = None
    end: float | None = None
    subject: str = ""
    #: Words in the subject or the body (all of them).
    words: str = ""
    attachment: str = ""
    message_id: str = ""

    def empty(self) -> bool:
        return self == VaultQuery()


@attrs.frozen
class VaultHit:
    """One message found by a vault search."""

    seq: int
    time: float
    sender: str
    recipients: tuple[str, ...]
    subject: str
    size: int
    message_id: str


class IVaultIndex(Interface):
    """The vault's search index: embedded (SQLite FTS5, ``ourmail.vault.index``) by default;
    a larger deployment can put a search cluster behind this interface.  Blocking: called
    in a thread."""

    def add(documents: Sequence[VaultDocument]) -> None:
        """Index these messages (seq ascending, after :meth:`last_seq`)."""

    def remove(seqs: Sequence[int]) -> None:
        """Forget these messages (retention expired them)."""

    count_limit = Attribute(
        "Counting stops this many past a search's offset: a total equal to offset + "
        "count_limit means at least that many."
    )

    def search(query: VaultQuery, offset: int, limit: int) -> tuple[int, list[VaultHit]]:
        """The number of messages that match (see :attr:`count_limit`) and those from
        ``offset``, oldest first."""

    def last_seq() -> int:
        """The highest seq indexed (0: none): capture catches up from here after a start."""

    def reset() -> None:
        """Forget everything (``ourmail vault reindex`` then adds every message again)."""


@attrs.frozen
class VaultMessage:
    """One vaulted message as the admin console shows it: its envelope, header section and
    hashes, never its body."""

    seq: int
    time: float
    #: The capture record's hash (its place in the chain).
    hash: str
    message_sha256: str
    size: int
    envelope: VaultEnvelope
    #: The header section as text (RFC 2047 words left encoded), cut at a bound.
    header: str
    #: Retention removed the message's content (its envelope and hashes remain).
    expired: bool = False


class VaultRefused(Exception):
    """A vault request that cannot be answered: ``code`` is ``not-found``, ``bad-query`` (a
    search the index cannot run; the message says why), ``too-many`` (an export over the
    console's bound), ``no-room`` (too little free space for an export), ``busy`` (another
    export is being written), ``indexing`` (the search index is catching up), ``audit`` (the
    audit trail cannot be written, so nothing is shown), ``failed`` (the vault could not be
    read or written: the message says why) or ``unavailable``."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(message or code)
        self.code = code


class IVaultDesk(Interface):
    """The vault as the admin console uses it (docs/vault.md): the code of ``ourmail vault``,
    run in threads.  Every search, view and export is appended to the vault's own audit
    trail and to the audit log *before* its answer is given (``VaultRefused("audit")`` when
    it cannot be)."""

    def may_use(address: str) -> bool:
        """Whether this admin holds the vault role (``[admin] vault_admins``)."""

    def search(
        actor: Actor, query: VaultQuery, offset: int, limit: int
    ) -> Deferred[tuple[int, bool, list[VaultHit]]]:
        """The messages ``query`` finds: how many (a lower bound when not exact), whether
        that count is exact, and those from ``offset`` (see :meth:`IVaultIndex.search`).
        ``VaultRefused("indexing")`` while the index is far behind the vault (it catches up
        in the background; the message says how far it is)."""

    def message(actor: Actor, seq: int) -> Deferred[VaultMessage]:
        """One captured message (``VaultRefused("not-found")`` for any other seq)."""

    def export(actor: Actor, query: VaultQuery, limit: int) -> Deferred[os.PathLike[str]]:
        """A zip of the messages ``query`` finds (``.eml`` files, the CSV and JSON manifest
        and the chain proof, as ``ourmail vault export --format zip`` writes it) in a new
        temporary file, which the caller sends and then removes; ``VaultRefused("too-many")``
        when more than ``limit`` messages match."""


# -- mailing lists (ourmail/lists, docs/lists.md) --------------------------------------------


@attrs.frozen
class ListArrival:
    """A message for one of a mailing list's addresses, as delivery hands it over."""

    #: The address it came for, as given at RCPT TO: the list itself (a post), or one of its
    #: command addresses (``LIST-request@``, ``LIST-join@``, ``LIST-leave@``, ``LIST-owner@``,
    #: ``LIST-bounces+…@``, ``LIST-confirm+TOKEN@``).
    address: str
    #: The envelope sender ("" for a bounce).
    sender: str
    #: The client's IP address ("" when there is none).
    client: str = ""
    #: The logged-in user who sent it ("" for mail from elsewhere).
    user: str = ""
    #: The transaction's id in the server's log.
    id: str = ""
    #: When it arrived (seconds since the epoch).
    arrival: float = 0.0
    #: The message's size in octets.
    size: int = 0


class IListIntake(Interface):
    """Where delivery hands the mail for a mailing list's addresses (``ourmail.lists``).  The
    list manager keeps each arrival durably before it is acknowledged, then handles it on
    its own time (posting, moderation, commands, bounces)."""

    def handles(address: str) -> bool:
        """Whether ``address`` (normalised) is one of a list's addresses; answered from
        memory, for RCPT TO."""

    def refusal(address: str, size: int) -> str | None:
        """Why a message of ``size`` octets (0: not known) cannot be taken for ``address``:
        an SMTP reply (``552 5.3.4 …``), or None when it can."""

    def accept(arrival: ListArrival, source: MessageSource) -> Deferred[None]:
        """Keep the message for its list; fires once it is durable (file and directory
        fsynced), and only then may the sender hear ``250``."""


@attrs.frozen
class SharedFolder:
    """A folder a user may read beside their own (a mailing list's archive): shown by IMAP in
    the shared namespace (RFC 2342) as ``<prefix>/<name>`` and by the webmail."""

    #: The folder's name under the shared prefix (the list's address).
    name: str
    folder: IFolder
    #: A short description (the list's name).
    title: str = ""


class ISharedFolders(Interface):
    """The folders shared with a user, beside their own (``ourmail.lists``: the archives of
    the lists they are a member of, and the public ones).  All are read-only."""

    prefix: str = Attribute(
        "The shared namespace's prefix, e.g. ``Lists``: no own folder may have that name."
    )

    def folders(user: str) -> Sequence[SharedFolder]:
        """The folders ``user`` may read now; answered from memory."""

    def folder(user: str, name: str) -> SharedFolder | None:
        """The shared folder ``name`` if ``user`` may read it, else None."""
