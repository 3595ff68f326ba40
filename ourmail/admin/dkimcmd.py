"""``ourmail dkim``: the DKIM keys that sign outbound mail (``<data>/dkim``, docs/filters.md).

``gen`` makes a key pair and prints the TXT record to publish; ``list`` shows every key with
its record; ``retire`` stops a key signing (its record should stay published a few days,
until mail signed with it has been read).
"""

from __future__ import annotations

import argparse
from typing import Any

from ourmail.config import Settings
from ourmail.secure.dkimkeys import ALGORITHMS, KeyStore, default_selector


def dkim_gen(store: KeyStore, settings: Settings, args: argparse.Namespace) -> None:
    selector = args.selector or default_selector(args.algorithm)
    key = store.generate(args.domain, selector, args.algorithm)
    print(f"; {key.algorithm} key {key.selector} for {key.domain}: {key.path}")
    print("; publish this record, then mail from the domain is signed with it:")
    print(key.dns_record())


def dkim_list(store: KeyStore, settings: Settings, args: argparse.Namespace) -> None:
    keys = list(store.keys(args.domain, retired=True))
    for key in keys:
        state = "signs" if key.active else "retired"
        print(f"{key.domain}\t{key.selector}\t{key.algorithm}\t{state}")
        print(f"\t{key.dns_record()}")
    print(f"{len(keys)} key{'s' if len(keys) != 1 else ''}")


def dkim_retire(store: KeyStore, settings: Settings, args: argparse.Namespace) -> None:
    key = store.retire(args.domain, args.selector)
    print(f"retired {key.selector} of {key.domain}: it no longer signs; keep its record")
    print("published until mail signed with it has been delivered and read (a few days)")


def run(settings: Settings, db: object, args: argparse.Namespace) -> None:
    """The chosen ``dkim`` command on the keys under ``<data>/dkim``."""
    args.dkim_func(KeyStore(settings.data_dir / "dkim"), settings, args)


def add_parser(topics: Any, common: argparse.ArgumentParser) -> None:
    """The ``dkim`` topic and its commands (they set ``dkim_func``)."""
    dkim = topics.add_parser("dkim", parents=[common], help="DKIM signing keys")
    cmds = dkim.add_subparsers(dest="command", required=True)
    p = cmds.add_parser("gen", parents=[common], help="make a key pair, print its DNS record")
    p.add_argument("domain")
    p.add_argument("--selector", help="default: YYYYMM and r (rsa) or e (ed25519)")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="rsa", help="default: rsa (2048)")
    p.set_defaults(func=run, dkim_func=dkim_gen)
    p = cmds.add_parser("list", parents=[common], help="keys and their DNS records")
    p.add_argument("domain", nargs="?")
    p.set_defaults(func=run, dkim_func=dkim_list)
    p = cmds.add_parser("retire", parents=[common], help="stop a key signing (kept)")
    p.add_argument("domain")
    p.add_argument("selector")
    p.set_defaults(func=run, dkim_func=dkim_retire)
