"""The webmail as a browser meets it (issue 16): the size of its JavaScript and CSS, the time
from submitting the login form to a usable inbox in real Chromium on loopback, and the memory
each logged-in session costs the server.  Prints figures; asserts nothing.

    .venv/bin/python bench/web_client.py                  # 20 logins in Chromium, 500 sessions
    .venv/bin/python bench/web_client.py --runs 5 --sessions 200

Targets (issue 16): JavaScript + CSS under 300 KB uncompressed; login to a usable inbox under
1 s.  "Usable" means the inbox page has loaded (its ``load`` event: every script and style
sheet in) with its message list or folder tree on screen.  The server runs in this process
(bench/harness.py); Chromium is Debian's (``/usr/bin/chromium``), driven by playwright.

Memory per session: ``--sessions`` different users log in once each (a new session the server
keeps, with its user's store opened); the Python memory allocated meanwhile (tracemalloc) and
the growth of the resident size, each divided by the number of sessions, after a garbage
collection.  The session holds the login and its avatar; the folders a page opens are the
user's store's, shared by every session and IMAP connection of that user (not counted here).
"""

from __future__ import annotations

import argparse
import gc
import http.client
import re
import ssl
import statistics
import sys
import tempfile
import time
import tracemalloc
from importlib import resources
from pathlib import Path
from urllib.parse import urlencode

from harness import start_server, stop_server

from ourmail.auth.passwords import hash_password

USER, PASSWORD = "alice@bench.test", "correct horse battery"
CHROMIUM = "/usr/bin/chromium"
#: What shows the inbox is usable: the message list when there is one, else the folder tree.
USABLE = "#main table, #main [role=grid], #folders li"


def asset_sizes() -> dict[str, int]:
    """Bytes of every JavaScript and CSS file the webmail ships."""
    static = resources.files("ourmail.web").joinpath("static")
    return {
        entry.name: len(entry.read_bytes())
        for entry in static.iterdir()
        if entry.name.endswith((".js", ".css"))
    }


def rss() -> int:
    """This process's resident set size in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def login_over_https(port: int, user: str = USER) -> None:
    """One login with a fresh cookie jar (a new session the server keeps)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    conn.request("GET", "/login")
    page = conn.getresponse()
    body = page.read().decode()
    cookie = page.getheader("Set-Cookie", "").split(";", 1)[0]
    match = re.search(r'name="csrf" value="([^"]+)"', body)
    assert match, body
    form = urlencode({"csrf": match.group(1), "username": user, "password": PASSWORD})
    conn.request(
        "POST",
        "/login",
        form.encode(),
        {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"},
    )
    reply = conn.getresponse()
    reply.read()
    assert reply.status == 303, reply.status
    conn.close()


def chromium_logins(port: int, runs: int) -> list[float]:
    """Seconds from clicking "Log in" to a usable inbox, one fresh browser context each run."""
    from playwright.sync_api import sync_playwright

    base = f"https://127.0.0.1:{port}"
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            for _ in range(runs + 1):  # the first warms Chromium's caches up: not counted
                context = browser.new_context(ignore_https_errors=True, locale="en-GB")
                page = context.new_page()
                page.goto(f"{base}/login")
                page.get_by_label("Address").fill(USER)
                page.get_by_label("Password").fill(PASSWORD)
                start = time.perf_counter()
                page.get_by_role("button", name="Log in").click()
                page.wait_for_url(f"{base}/", wait_until="load")
                page.locator(USABLE).first.wait_for(state="visible")
                times.append(time.perf_counter() - start)
                context.close()
        finally:
            browser.close()
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="logins in Chromium")
    parser.add_argument("--sessions", type=int, default=200, help="users for the memory figure")
    args = parser.parse_args()

    sizes = asset_sizes()
    for name, size in sorted(sizes.items()):
        print(f"  {name:24} {size / 1024:7.1f} KB")
    print(f"JavaScript + CSS: {sum(sizes.values()) / 1024:.1f} KB (target < 300 KB)")

    with tempfile.TemporaryDirectory() as tmp:
        server, port = start_server(Path(tmp), "web")
        try:
            server.accounts.add_user(USER, hash_password(PASSWORD))
            if Path(CHROMIUM).exists():
                times = chromium_logins(port, args.runs)
                median, most = statistics.median(times) * 1000, max(times) * 1000
                print(
                    f"login to usable inbox in Chromium: median {median:.0f} ms, "
                    f"max {most:.0f} ms over {len(times)} runs (target < 1000 ms)"
                )
            else:
                print(f"no {CHROMIUM}: login time not measured", file=sys.stderr)
            hashed = hash_password(PASSWORD)
            users = [f"user{n}@bench.test" for n in range(args.sessions)]
            for user in users:
                server.accounts.add_user(user, hashed)
            login_over_https(port)  # the code paths warm
            gc.collect()
            tracemalloc.start()
            before, traced = rss(), tracemalloc.get_traced_memory()[0]
            for user in users:
                login_over_https(port, user)
            gc.collect()
            after, grown = rss(), tracemalloc.get_traced_memory()[0] - traced
            tracemalloc.stop()
            n = len(users)
            print(
                f"memory per web session: {grown / n / 1024:.1f} KB of Python objects, "
                f"{(after - before) / n / 1024:.1f} KB resident ({n} users logged in, "
                f"{before / 2**20:.0f} -> {after / 2**20:.0f} MB)"
            )
        finally:
            stop_server(server)


if __name__ == "__main__":
    main()
