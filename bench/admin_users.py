"""The admin console's user list at 200,000 local accounts (issue 17's benchmark): the time to
build the sorted index once after ``accounts.json`` changed (in a worker thread, not per
request), then the server time of the first page, a later page, one domain's first page and
a substring search, as the console asks for them (``LocalAccountAdmin.users`` minus the
thread hop).  Prints figures; asserts nothing.

    .venv/bin/python bench/admin_users.py --dir /var/tmp/au --users 200000

The accounts file is written once (argon2id hashes are faked: only listing is measured) and
reused on later runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from ourmail.manage.userindex import UserIndex

HASH = "$argon2id$v=19$m=65536,t=3,p=4$" + "a" * 22 + "$" + "b" * 43
DOMAINS = ("example.org", "dimos.gr", "school.example.net", "library.example.com")


def make(data: Path, count: int) -> None:
    path = data / "accounts.json"
    if path.exists() and len(json.loads(path.read_text())["users"]) == count:
        return
    data.mkdir(parents=True, exist_ok=True)
    users = {
        f"user{n:06d}.{'abcdefgh'[n % 8]}@{DOMAINS[n % len(DOMAINS)]}": {"password": HASH}
        for n in range(count)
    }
    path.write_text(json.dumps({"users": users, "domains": list(DOMAINS[1:])}, indent=1))


def timed(step: object, rounds: int = 20) -> str:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        step()  # type: ignore[operator]
        samples.append((time.perf_counter() - t0) * 1000)
    return f"median {statistics.median(samples):7.2f} ms, max {max(samples):7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--users", type=int, default=200_000)
    args = parser.parse_args()
    make(args.dir, args.users)
    size = (args.dir / "accounts.json").stat().st_size
    index = UserIndex(args.dir)
    t0 = time.perf_counter()
    snapshot = index.current()
    build = (time.perf_counter() - t0) * 1000
    print(f"{len(snapshot.users)} users, accounts.json {size / 1e6:.1f} MB")
    print(f"index build after a change (worker thread, once): {build:.0f} ms")
    print(f"unchanged file, per request (stat only):  {timed(index.current)}")
    last = len(snapshot.users) - 50
    one, two = [DOMAINS[1]], list(DOMAINS[:2])
    steps = {
        "first page of all users": lambda: snapshot.page(None, "", 0, 50),
        "last page of all users": lambda: snapshot.page(None, "", last, 50),
        "first page of one domain": lambda: snapshot.page(one, "", 0, 50),
        "first page of a two-domain admin": lambda: snapshot.page(two, "", 0, 50),
        "search '12345' in all users": lambda: snapshot.page(None, "12345", 0, 50),
        "search '.c@' in all users (25,000 hits)": lambda: snapshot.page(None, ".c@", 0, 50),
    }
    for name, step in steps.items():
        print(f"{name + ':':42}{timed(step)}")


if __name__ == "__main__":
    main()
