"""Our SRS addresses against Mail::SRS, the Perl module by the scheme's author (Shevek): each
side reverses what the other wrote, with the same secret, in both the SRS0 and SRS1 forms."""

from __future__ import annotations

import subprocess
import time

import pytest
from twisted.internet.task import Clock

from ourmail.interfaces import InvalidSRS
from ourmail.srs import SenderRewriter

PERL = r"""
use Mail::SRS;
my $srs = Mail::SRS->new(Secret => 'shared secret', MaxAge => 21, AlwaysRewrite => 1);
my ($op, $address, $alias) = @ARGV;
my $out = eval { $op eq 'forward' ? $srs->forward($address, $alias) : $srs->reverse($address) };
print defined $out ? $out : "ERROR: $@";
"""


def perl(*args: str) -> str:
    done = subprocess.run(
        ["perl", "-e", PERL, *args], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout


def ours() -> SenderRewriter:
    clock = Clock()
    clock.advance(time.time())  # Mail::SRS stamps with the real date
    return SenderRewriter([b"shared secret"], {"example.test"}.__contains__, clock)


def test_mail_srs_reverses_our_srs0_and_we_reverse_its() -> None:
    srs = ours()
    ours_srs0 = srs.forward("Dan.Smith@else.test", "example.test")
    assert perl("reverse", ours_srs0) == "Dan.Smith@else.test"
    theirs = perl("forward", "Dan.Smith@else.test", "example.test")
    assert theirs == ours_srs0  # the same secret and day give the very same address
    assert srs.reverse(theirs) == "Dan.Smith@else.test"


def test_srs1_both_ways() -> None:
    srs = ours()
    first = perl("forward", "dan@else.test", "first.test")
    ours_srs1 = srs.forward(first, "example.test")
    assert ours_srs1.startswith("SRS1=")
    assert perl("reverse", ours_srs1) == first
    theirs_srs1 = perl("forward", first, "example.test")
    assert theirs_srs1 == ours_srs1
    assert srs.reverse(theirs_srs1) == first


def test_a_forged_hash_is_refused_by_both() -> None:
    srs = ours()
    address = srs.forward("dan@else.test", "example.test")
    forged = address.replace("=else.test=", "=evil.test=")
    assert perl("reverse", forged).startswith("ERROR")
    with pytest.raises(InvalidSRS):
        srs.reverse(forged)
