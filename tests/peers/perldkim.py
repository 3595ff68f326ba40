"""Perl's Mail::DKIM (Debian ``libmail-dkim-perl``) as an independent verifier of what we
sign and seal, asking the tests' loopback DNS server (../shared/PEERS.md)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

_SCRIPT = r"""
use strict;
use Mail::DKIM::Verifier;
use Mail::DKIM::ARC::Verifier;
use Net::DNS::Resolver;
my ($port, $mode) = @ARGV;
Mail::DKIM::DNS::resolver(Net::DNS::Resolver->new(
    nameservers => ['127.0.0.1'], port => $port, udp_timeout => 5, tcp_timeout => 5));
my $v = $mode eq 'arc' ? Mail::DKIM::ARC::Verifier->new() : Mail::DKIM::Verifier->new();
binmode STDIN;
while (my $line = <STDIN>) { $line =~ s/\r?\n\z/\r\n/; $v->PRINT($line); }
$v->CLOSE;
print $v->result, "\n";
if ($mode ne 'arc') {
    for my $s ($v->signatures) {
        print join(' ', $s->domain, $s->selector, $s->algorithm, $s->result), "\n";
    }
} else {
    print $v->result_detail, "\n";
}
"""


def available() -> bool:
    if shutil.which("perl") is None:
        return False
    probe = subprocess.run(
        ["perl", "-MMail::DKIM::ARC::Verifier", "-MNet::DNS::Resolver", "-e1"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


needs_perl = pytest.mark.skipif(not available(), reason="libmail-dkim-perl is not installed")


def verify(message: bytes, port: int, arc: bool = False) -> list[str]:
    """Mail::DKIM's verdict on ``message``: the overall result, then one line per DKIM
    signature (``domain selector algorithm result``) or the ARC result detail."""
    out = subprocess.run(
        ["perl", "-e", _SCRIPT, str(port), "arc" if arc else "dkim"],
        input=message,
        capture_output=True,
        check=True,
        timeout=60,
    )
    return out.stdout.decode().splitlines()
