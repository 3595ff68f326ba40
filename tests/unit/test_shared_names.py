"""Names the store and the protocols share live below both: flags, default folders, quota."""

from pathlib import Path

from zope.interface.verify import verifyObject

from ourmail.auth.accounts import AccountDB
from ourmail.config import QuotaLimit, QuotaSettings
from ourmail.interfaces import DEFAULT_FOLDERS, IQuotaPolicy, Usage
from ourmail.mailflags import SYSTEM_FLAGS, canonical_flag
from ourmail.store.maildir import FLAG_LETTERS
from ourmail.store.memory import MemoryStore
from ourmail.store.quota import QuotaPolicy
from ourmail.store.userstore import ensure_default_folders


def test_every_system_flag_has_a_maildir_letter() -> None:
    assert set(FLAG_LETTERS.values()) == SYSTEM_FLAGS
    assert canonical_flag("\\SEEN") == "\\Seen" and canonical_flag("$Junk") == "$Junk"


def test_quota_policy_provides_the_interface(tmp_path: Path) -> None:
    policy = QuotaPolicy(QuotaSettings(default=QuotaLimit(bytes=10)), AccountDB(tmp_path))
    assert verifyObject(IQuotaPolicy, policy)
    user = MemoryStore().user("a@b.c")
    ensure_default_folders(user)
    assert set(user.list_folders()) == {"INBOX", *DEFAULT_FOLDERS}
    assert policy.usage(user) == Usage(0, 0)
    assert policy.fits(user, 10) and not policy.fits(user, 11)
