"""The local directory's lookup of a group and of a forwarding user (run on the reactor
thread at every RCPT): a group of 1,000 members, the same spread over 10 nested groups of
100, and a user who forwards, among ``--users`` local accounts.  Prints the median and
slowest of the samples in milliseconds; asserts nothing.

    .venv/bin/python bench/group_lookup.py --users 200000
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from ourmail.auth.accounts import AccountDB
from ourmail.directory.local import LocalDirectory
from ourmail.interfaces import Recipient

HASH = "$argon2id$v=19$m=65536,t=3,p=4$" + "a" * 22 + "$" + "b" * 43


def make(data: Path, count: int) -> None:
    users: dict[str, dict[str, object]] = {
        f"user{n:06d}@example.org": {"password": HASH} for n in range(count)
    }
    users["user000000@example.org"]["forward"] = {"to": ["a@far.example"], "keep": True}
    members = [f"user{n:06d}@example.org" for n in range(1000)]
    groups = {"big@example.org": {"name": "Big", "members": members}}
    nested = [f"part{i}@example.org" for i in range(10)]
    for i, part in enumerate(nested):
        groups[part] = {"name": part, "members": members[i * 100 : (i + 1) * 100]}
    groups["nested@example.org"] = {"name": "Nested", "members": nested}
    data.joinpath("accounts.json").write_text(
        json.dumps({"users": users, "domains": [], "groups": groups})
    )


def timed(directory: LocalDirectory, address: str, rounds: int = 30) -> str:
    samples = []
    for _ in range(rounds):
        found: list[Recipient] = []
        start = time.perf_counter()
        directory.lookup(address).addCallback(found.append)
        samples.append((time.perf_counter() - start) * 1000)
    reached = len(found[0].mailboxes) + len(found[0].forwards)
    return f"median {statistics.median(samples):.2f} ms, slowest {max(samples):.2f} ms ({reached})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        make(data, args.users)
        directory = LocalDirectory(AccountDB(data), ("example.org",))
        directory.lookup("user000001@example.org")  # the file read once, as a server has
        print(f"{args.users} users")
        print(f"group of 1,000:          {timed(directory, 'big@example.org')}")
        print(f"10 nested groups of 100: {timed(directory, 'nested@example.org')}")
        print(f"forwarding user:         {timed(directory, 'user000000@example.org')}")
        print(f"plain user:              {timed(directory, 'user000002@example.org')}")


if __name__ == "__main__":
    main()
