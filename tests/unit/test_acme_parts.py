"""The ACME parts without a CA: ``[acme]`` settings, the names, when to renew, and the
``http`` listener's challenge answers."""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import attrs
import pytest
import requests
from acme import messages as acme_messages
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest

from ourmail.admin import certcmd
from ourmail.config import LETS_ENCRYPT, ConfigError, Settings, config_template, load_settings
from ourmail.secure import acmeorder, acmerenewal, certstatus, selfsigned
from ourmail.secure.acmeorder import CAServer, OrderFailed, RateLimited, order_certificate
from ourmail.secure.acmerenewal import CertificateRenewal
from ourmail.secure.certfiles import (
    ACMEFiles,
    Backoff,
    CertInfo,
    WantedNames,
    cert_info,
    pair_matches,
    read_backoff,
    read_info,
    read_left_out,
    record_failure,
    recover_pair,
    renewal_reason,
    store_pair,
    wanted_names,
)
from ourmail.smtp.workers import WorkerProtocol
from ourmail.web.acmechallenge import ChallengeOrRedirect
from ourmail.web.redirect import RedirectToHTTPS

NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)


def settings_with(tmp_path: Path, acme: str) -> Settings:
    (tmp_path / "ourmail.toml").write_text(
        f'hostname = "mail.a.org"\ndomains = ["a.org", "b.org"]\n[acme]\n{acme}'
    )
    return load_settings(data=str(tmp_path), is_root=False)


def test_acme_is_off_by_default_with_lets_encrypt_and_30_days(tmp_path: Path) -> None:
    s = load_settings(data=str(tmp_path), hostname="mail.a.org", is_root=False)
    assert s.acme.enabled is False
    assert s.acme.directory == LETS_ENCRYPT
    assert s.acme.renew_days == 30
    assert s.acme.ca_file == ""


def test_the_host_and_acme_names_are_required_autoconfig_and_mta_sts_optional(
    tmp_path: Path,
) -> None:
    s = settings_with(tmp_path, 'enabled = true\nnames = ["WEBMAIL.a.org", "mail.a.org"]\n')
    assert wanted_names(s).required == ("mail.a.org", "webmail.a.org")
    assert wanted_names(s).optional == (
        "autoconfig.a.org",
        "mta-sts.a.org",
        "autoconfig.b.org",
        "mta-sts.b.org",
    )


def test_without_the_web_listener_there_are_no_optional_names(tmp_path: Path) -> None:
    s = settings_with(tmp_path, "enabled = true\n")
    no_web = attrs.evolve(s, listen={**s.listen, "web": None})
    assert wanted_names(no_web).all == ("mail.a.org",)


def test_domains_added_while_running_are_named_too(tmp_path: Path) -> None:
    s = settings_with(tmp_path, "enabled = true\n")
    optional = wanted_names(s, ["c.org", "a.org"]).optional
    assert optional[-2:] == ("autoconfig.c.org", "mta-sts.c.org")
    assert len(optional) == 6


@pytest.mark.parametrize(
    ("acme", "error"),
    [
        ('directory = "http://ca.example/dir"\n', "https://"),
        ("renew_days = 0\n", "renew_days"),
        ("renew_days = 90\n", "renew_days"),
        ('email = "nobody"\n', "acme.email"),
        ('names = ["not a name"]\n', "not a domain name"),
        ("names = [1]\n", "acme.names"),
        ("enabled = 1\n", "acme.enabled"),
        ("colour = 1\n", "acme.colour"),
    ],
)
def test_bad_acme_settings_are_refused_clearly(tmp_path: Path, acme: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        settings_with(tmp_path, acme)


def test_the_written_configuration_documents_acme_and_still_loads(tmp_path: Path) -> None:
    s = load_settings(data=str(tmp_path), hostname="mail.a.org", is_root=False)
    text = config_template(s)
    assert "[acme]" in text and "acme-staging-v02" in text
    (tmp_path / "ourmail.toml").write_text(text)
    assert load_settings(data=str(tmp_path), is_root=False).acme == s.acme


def test_acme_needs_the_http_listener_and_a_readable_ca_file(tmp_path: Path) -> None:
    s = settings_with(tmp_path, "enabled = true\n")
    no_http = attrs.evolve(s, listen={**s.listen, "http": None})
    with pytest.raises(ConfigError, match="http listener"):
        CertificateRenewal.from_settings(no_http, None, reactor, {})
    bad_ca = attrs.evolve(s, acme=attrs.evolve(s.acme, ca_file=str(tmp_path / "none.pem")))
    with pytest.raises(ConfigError, match=r"none\.pem"):
        CertificateRenewal.from_settings(bad_ca, None, reactor, {})


def info(names: tuple[str, ...], days: float) -> CertInfo:
    return CertInfo(names, "mail.a.org", "CA", 1, NOW + datetime.timedelta(days=days))


def test_when_a_new_certificate_is_needed() -> None:
    names = ("mail.a.org", "mta-sts.a.org")
    assert renewal_reason(None, names, 30, NOW) == "there is no ACME certificate yet"
    assert renewal_reason(info(names, 31), names, 30, NOW) is None
    assert "expires in 29.0 days" in str(renewal_reason(info(names, 29), names, 30, NOW))
    assert "expires" in str(renewal_reason(info(names, -1), names, 30, NOW))
    lacking = renewal_reason(info(("mail.a.org",), 80), names, 30, NOW)
    assert lacking == "the certificate lacks mta-sts.a.org"
    assert renewal_reason(info((*names, "old.a.org"), 80), names, 30, NOW) is None


def test_cert_info_reads_names_issuer_and_expiry() -> None:
    cert, _ = selfsigned.generate("mail.a.org", ("autoconfig.a.org",))
    got = cert_info(cert)
    assert got.names == ("mail.a.org", "autoconfig.a.org")
    assert got.self_signed and got.issuer == "mail.a.org"
    assert 800 < got.days_left(datetime.datetime.now(datetime.UTC)) < 830


def test_a_key_that_is_not_the_certificates_is_noticed(tmp_path: Path) -> None:
    cert, key = selfsigned.generate("mail.a.org")
    _, other = selfsigned.generate("mail.a.org")
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    (tmp_path / "other.pem").write_bytes(other)
    assert pair_matches(tmp_path / "cert.pem", tmp_path / "key.pem")
    assert not pair_matches(tmp_path / "cert.pem", tmp_path / "other.pem")
    assert not pair_matches(tmp_path / "cert.pem", tmp_path / "missing.pem")


def test_the_renewal_request_file_is_made_private(tmp_path: Path) -> None:
    files = ACMEFiles.of(tmp_path)
    files.request_renewal()
    assert files.renew_request.exists()
    assert files.folder.stat().st_mode & 0o777 == 0o700


def answer(path: bytes, method: bytes = b"GET") -> tuple[int, bytes, DummyRequest]:
    challenges = {"tok_EN-1": "tok_EN-1.thumbprint"}
    resource = ChallengeOrRedirect(challenges, RedirectToHTTPS("mail.a.org", lambda: 443))
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    request.path = path
    request.uri = path
    request.method = method
    body = resource.render(request)
    return request.responseCode or 200, body, request


def test_a_known_token_is_answered_with_its_key_authorisation() -> None:
    code, body, request = answer(b"/.well-known/acme-challenge/tok_EN-1")
    assert (code, body) == (200, b"tok_EN-1.thumbprint")
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"application/octet-stream"]


@pytest.mark.parametrize(
    "path",
    [
        b"/.well-known/acme-challenge/unknown",
        b"/.well-known/acme-challenge/",
        b"/.well-known/acme-challenge/tok_EN-1/x",
        b"/.well-known/acme-challenge/%2e%2e",
        b"/.well-known/acme-challenge/" + b"a" * 5000,
    ],
)
def test_other_tokens_are_404_and_never_redirected(path: bytes) -> None:
    code, _, request = answer(path)
    assert code == 404
    assert not request.responseHeaders.hasHeader(b"location")
    # How `ourmail cert renew` knows the address is held by a running ourmail.
    assert request.responseHeaders.getRawHeaders(b"x-acme-responder") == [b"ourmail"]


def test_only_get_and_head_are_answered() -> None:
    code, body, request = answer(b"/.well-known/acme-challenge/tok_EN-1", b"POST")
    assert (code, body) == (405, b"")
    assert request.responseHeaders.getRawHeaders(b"allow") == [b"GET, HEAD"]


def test_every_other_path_still_redirects_to_https() -> None:
    code, _, request = answer(b"/inbox")
    assert code == 301
    assert request.responseHeaders.getRawHeaders(b"location") == [b"https://mail.a.org/inbox"]


def test_more_names_than_a_certificate_carries_fail_before_asking_the_ca(tmp_path: Path) -> None:
    names = tuple(f"n{i}.a.org" for i in range(101))
    ca = CAServer("https://127.0.0.1:1/dir")
    with pytest.raises(OrderFailed, match="101 names are more than the 100"):
        order_certificate(ca, tmp_path / "account.key", names, print, print)
    assert not (tmp_path / "account.key").exists()


def optional_failing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, failing: set[str]
) -> tuple[CertificateRenewal, list[tuple[str, ...]]]:
    """A renewal whose CA fails the validation of the ``failing`` names; the orders made."""
    orders: list[tuple[str, ...]] = []

    def order(ca: object, key: object, names: tuple[str, ...], *_: object) -> tuple[bytes, bytes]:
        orders.append(names)
        bad = tuple(n for n in names if n in failing)
        if bad:
            raise OrderFailed("validation failed: NXDOMAIN", bad)
        return selfsigned.generate(names[0], names[1:])

    monkeypatch.setattr(acmerenewal, "order_certificate", order)
    wanted = WantedNames(("mail.a.org",), ("autoconfig.a.org", "mta-sts.a.org"))
    ca = CAServer("https://ca.example/dir")
    files = ACMEFiles.of(tmp_path)
    files.folder.mkdir(parents=True)
    return CertificateRenewal(ca, files, lambda: wanted, 30, None, reactor, {}), orders


def test_optional_names_that_fail_are_left_off_and_tried_again_a_week_later(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    renewal, orders = optional_failing(monkeypatch, tmp_path, {"autoconfig.a.org"})
    files = renewal.files
    assert renewal._renew(False, NOW) is True
    assert orders == [
        ("mail.a.org", "autoconfig.a.org", "mta-sts.a.org"),
        ("mail.a.org", "mta-sts.a.org"),
    ]
    stored = read_info(files.certificate)
    assert stored is not None and stored.names == ("mail.a.org", "mta-sts.a.org")
    assert read_left_out(files.left_out) == {"autoconfig.a.org": NOW}
    # The missing optional name is no reason to order again every day...
    assert renewal._renew(False, NOW + datetime.timedelta(days=6)) is False
    assert len(orders) == 2
    # ...but after a week it is tried again (and left off again while it still fails).
    later = NOW + datetime.timedelta(days=8)
    assert renewal._renew(False, later) is True
    assert orders[2:] == [
        ("mail.a.org", "autoconfig.a.org", "mta-sts.a.org"),
        ("mail.a.org", "mta-sts.a.org"),
    ]
    assert read_left_out(files.left_out) == {"autoconfig.a.org": later}


def test_an_optional_name_that_validates_again_is_no_longer_left_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    renewal, orders = optional_failing(monkeypatch, tmp_path, set())
    files = renewal.files
    files.left_out.write_text('{"autoconfig.a.org": "2026-11-01T00:00:00+00:00"}')
    assert renewal._renew(False, NOW) is True
    assert orders == [("mail.a.org", "autoconfig.a.org", "mta-sts.a.org")]
    assert not files.left_out.exists()


def test_a_required_name_that_fails_fails_the_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    renewal, orders = optional_failing(monkeypatch, tmp_path, {"mail.a.org", "mta-sts.a.org"})
    with pytest.raises(OrderFailed, match="NXDOMAIN"):
        renewal._renew(False, NOW)
    assert len(orders) == 1
    assert not renewal.files.certificate.exists()
    assert not renewal.files.left_out.exists()


def test_cert_status_shows_the_names_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = settings_with(tmp_path, "enabled = true\n")
    files = ACMEFiles.of(s.data_dir)
    files.folder.mkdir(parents=True)
    files.left_out.write_text('{"autoconfig.b.org": "2026-12-01T10:12:00+00:00"}')
    certcmd.cert_status(s, argparse.Namespace())
    out = capsys.readouterr().out
    assert "before expiry, for mail.a.org\n" in out
    assert "when they validate, autoconfig.a.org, mta-sts.a.org" in out
    assert (
        "left out:  autoconfig.b.org: validation failed 2026-12-01 10:12 UTC, "
        "tried again after 2026-12-08 10:12 UTC"
    ) in out


def test_an_ssl_listener_serves_its_own_file_as_twisted_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cert, key = selfsigned.generate("own.a.org")
    (tmp_path / "own.pem").write_bytes(key + cert)
    (tmp_path / "ourmail.toml").write_text(
        'hostname = "mail.a.org"\ndomains = ["a.org"]\n[listen]\n'
        'imaps = "ssl:1993:privateKey=own.pem"\npop3s = "ssl:1995"\n'
    )
    s = load_settings(data=str(tmp_path), is_root=False)
    found = {c.listener: c for c in certstatus.listener_certificates(s)}
    assert (found["imaps"].source, found["imaps"].path) == ("endpoint", str(tmp_path / "own.pem"))
    assert found["imaps"].names == ("own.a.org",)
    # No file named: Twisted reads server.pem, never the shared certificate.
    assert (found["pop3s"].source, found["pop3s"].path) == (
        "endpoint",
        str(tmp_path / "server.pem"),
    )


@pytest.mark.parametrize(
    ("endpoint", "warned"),
    [
        ("tcp:80", False),
        ("tcp:port=80:interface=192.0.2.1", False),
        ("tcp:8080", True),
        ("tcp:8080:interface=127.0.0.1", True),
    ],
)
def test_an_http_listener_off_port_80_is_warned_of(
    tmp_path: Path, endpoint: str, warned: bool
) -> None:
    s = settings_with(tmp_path, "enabled = true\n")
    s = attrs.evolve(s, listen={**s.listen, "http": endpoint})
    warning = acmerenewal.port_warning(s)
    assert bool(warning) is warned
    if warned:
        assert "port 8080" in warning and "checks HTTP-01 on port 80" in warning


def test_the_port_warning_is_logged_at_start_and_with_each_failure(tmp_path: Path) -> None:
    s = settings_with(tmp_path, "enabled = true\n")
    s = attrs.evolve(s, listen={**s.listen, "http": "tcp:8080"})
    renewal = CertificateRenewal.from_settings(s, None, Clock(), {})
    lines: list[str] = []

    def observe(event: dict[str, object]) -> None:
        lines.append(formatEvent(event) or "")

    globalLogPublisher.addObserver(observe)
    try:
        renewal.startService()  # the first check waits for the clock, which never moves
        renewal._failed(Failure(OrderFailed("connection refused")))
        renewal.stopService()
    finally:
        globalLogPublisher.removeObserver(observe)
    warned = [line for line in lines if "http listener is on port 8080" in line]
    assert len(warned) == 2
    assert warned[0].startswith("ACME: the http listener is on port 8080")
    assert "ACME certificate not obtained" in warned[1]
    assert "connection refused (note: the http listener is on port 8080" in warned[1]


def pair_folder(tmp_path: Path) -> tuple[ACMEFiles, bytes, bytes, bytes, bytes]:
    """An ACME folder holding an old pair; the old and a new (certificate, key)."""
    files = ACMEFiles.of(tmp_path)
    files.folder.mkdir(parents=True)
    old_cert, old_key = selfsigned.generate("mail.a.org")
    new_cert, new_key = selfsigned.generate("mail.a.org")
    files.certificate.write_bytes(old_cert)
    files.key.write_bytes(old_key)
    return files, old_cert, old_key, new_cert, new_key


def test_a_new_pair_replaces_the_old_whole(tmp_path: Path) -> None:
    files, _, _, new_cert, new_key = pair_folder(tmp_path)
    store_pair(files, new_cert, new_key)
    assert (files.certificate.read_bytes(), files.key.read_bytes()) == (new_cert, new_key)
    assert files.key.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in files.folder.iterdir()) == ["cert.pem", "key.pem"]
    assert recover_pair(files) is False


@pytest.mark.parametrize(
    ("crash", "recovered"),
    [
        ("both written", True),  # neither renamed yet
        ("key renamed", True),  # the certificate's rename did not happen
        ("only the key written", False),  # the new certificate never made it to disk
        ("a torn key", False),
    ],
)
def test_a_crash_while_storing_leaves_the_old_pair_or_the_new_one(
    tmp_path: Path, crash: str, recovered: bool
) -> None:
    files, old_cert, old_key, new_cert, new_key = pair_folder(tmp_path)
    if crash == "both written":
        files.new_key.write_bytes(new_key)
        files.new_certificate.write_bytes(new_cert)
    elif crash == "key renamed":
        files.key.write_bytes(new_key)
        files.new_certificate.write_bytes(new_cert)
    elif crash == "only the key written":
        files.new_key.write_bytes(new_key)
    else:
        files.new_key.write_bytes(new_key[:40])
        files.new_certificate.write_bytes(new_cert)
    assert recover_pair(files) is recovered
    expected = (new_cert, new_key) if recovered else (old_cert, old_key)
    assert (files.certificate.read_bytes(), files.key.read_bytes()) == expected
    assert not files.new_key.exists() and not files.new_certificate.exists()
    assert pair_matches(files.certificate, files.key)


def test_a_failing_hand_over_hook_neither_fails_the_renewal_nor_skips_the_others(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    renewal, _ = optional_failing(monkeypatch, tmp_path, set())
    told: list[Path] = []

    def exited(cert: Path, key: Path) -> None:
        raise ProcessExitedAlready()

    renewal.installed += [exited, lambda cert, key: told.append(cert)]
    logged: list[dict[str, object]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        assert renewal._renew(False, NOW) is True
        assert renewal._renewed(True) is True
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert told == [renewal.files.certificate]
    failures = [e for e in logged if "not told of the new certificate" in str(e["log_format"])]
    assert len(failures) == 1
    assert isinstance(failures[0]["log_failure"].value, ProcessExitedAlready)  # type: ignore[union-attr]


class _Exited:
    """A worker's transport whose process has ended."""

    def signalProcess(self, signal: str) -> None:
        raise ProcessExitedAlready()


def test_a_worker_that_has_exited_is_not_an_error_at_hangup() -> None:
    worker = WorkerProtocol(None, 1)  # type: ignore[arg-type]
    worker.ready = True
    worker.transport = _Exited()  # type: ignore[assignment]
    logged: list[str] = []

    def observe(event: dict[str, object]) -> None:
        logged.append(formatEvent(event) or "")

    globalLogPublisher.addObserver(observe)
    try:
        worker.hangup()
    finally:
        globalLogPublisher.removeObserver(observe)
    assert any("mx worker 1 not told to reload its certificate" in line for line in logged)


def test_failed_orders_are_counted_on_disk_and_the_count_goes_with_a_success(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    renewal, orders = optional_failing(monkeypatch, tmp_path, {"mail.a.org"})
    path = renewal.files.backoff
    for failures in (1, 2):
        with pytest.raises(OrderFailed):
            renewal._attempt(False, NOW)
        assert read_backoff(path) == Backoff(failures, NOW.timestamp())
    renewal.names = lambda: WantedNames(("mx.a.org",), ())
    assert renewal._attempt(False, NOW) is True
    assert not path.exists()


def restarted(tmp_path: Path, backoff: Backoff | None) -> tuple[CertificateRenewal, Clock]:
    """A renewal started on a clock at 1000 s, with ``backoff`` stored from before."""
    s = settings_with(tmp_path, "enabled = true\n")
    clock = Clock()
    clock.advance(1000)
    renewal = CertificateRenewal.from_settings(s, None, clock, {})
    if backoff is not None:
        for _ in range(backoff.failures):
            record_failure(renewal.files.backoff, backoff.last)
    renewal.startService()
    renewal.stopService()
    return renewal, clock


def test_a_restart_keeps_to_the_back_off_of_the_orders_that_failed_before(tmp_path: Path) -> None:
    # Three failures: the third retry waits 4 x 5 minutes; 100 s of them had passed.
    renewal, clock = restarted(tmp_path, Backoff(3, 900.0))
    assert renewal._backoff_until == 1000 + 1100
    assert renewal._retry == acmerenewal.RETRY_FIRST * 8
    assert renewal._resume(None) == 0


def test_a_back_off_that_has_run_out_or_none_checks_at_once(tmp_path: Path) -> None:
    renewal, _ = restarted(tmp_path, Backoff(1, 0.0))  # 5 minutes after 0 s: long past
    assert renewal._backoff_until is None
    assert renewal._retry == acmerenewal.RETRY_FIRST


def test_a_hangup_while_backing_off_orders_only_when_cert_renew_asked(tmp_path: Path) -> None:
    renewal, clock = restarted(tmp_path, Backoff(2, 1000.0))
    asked: list[bool] = []

    def renew(force: bool = False) -> Deferred[bool]:
        asked.append(force)
        return succeed(True)

    renewal.renew = renew  # type: ignore[method-assign]
    assert renewal._asked_check(False) is False
    assert asked == []
    renewal.files.request_renewal()
    got: list[object] = []
    d = renewal._asked_check(True)
    assert isinstance(d, Deferred)
    d.addCallback(got.append)
    assert (asked, got) == ([True], [True])
    assert not renewal.files.renew_request.exists()
    assert renewal._backoff_until is None
    assert renewal._asked_check(False) is not False  # the back-off is over: a usual check


def problem(status: int, kind: str, headers: dict[str, str]) -> requests.Response:
    """A CA's answer with an RFC 7807 problem document (RFC 8555 §6.7)."""
    response = requests.Response()
    response.status_code = status
    response.headers.update({"Content-Type": "application/problem+json", **headers})
    body = {"type": f"urn:ietf:params:acme:error:{kind}", "detail": "too many certificates"}
    response._content = json.dumps(body).encode()
    return response


def test_a_rate_limit_problem_keeps_its_retry_after() -> None:
    before = datetime.datetime.now()
    with pytest.raises(RateLimited, match="the CA limits the requests") as limited:
        acmeorder._Network._check_response(problem(429, "rateLimited", {"Retry-After": "3600"}))
    when = limited.value.retry_after
    assert when is not None
    assert 3599 <= (when - before).total_seconds() <= 3700
    with pytest.raises(RateLimited) as without:
        acmeorder._Network._check_response(problem(429, "rateLimited", {}))
    assert without.value.retry_after is None
    with pytest.raises(acme_messages.Error):  # other problems as acme raises them
        acmeorder._Network._check_response(problem(403, "unauthorized", {"Retry-After": "9"}))


def test_the_next_try_waits_for_the_cas_retry_after_also_across_a_restart(
    tmp_path: Path,
) -> None:
    renewal, clock = restarted(tmp_path, None)
    renewal.running = True
    wish = datetime.datetime.fromtimestamp(clock.seconds() + 7200)
    renewal._failed(Failure(RateLimited("the CA limits the requests", wish)))
    (call,) = clock.getDelayedCalls()
    assert call.getTime() == clock.seconds() + 7200  # not the 5 minutes of the back-off
    call.cancel()
    # What a restart reads: the failure the order's thread counted, with the CA's wish.
    record_failure(renewal.files.backoff, clock.seconds(), wish.timestamp())
    assert renewal._resume(read_backoff(renewal.files.backoff)) == 7200


def test_the_cas_retry_after_is_stored_with_the_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    renewal, _ = optional_failing(monkeypatch, tmp_path, set())
    wish = datetime.datetime(2026, 12, 2, 12, 0)

    def limited(*args: object) -> tuple[bytes, bytes]:
        raise RateLimited("the CA limits the requests", wish)

    monkeypatch.setattr(acmerenewal, "order_certificate", limited)
    with pytest.raises(RateLimited):
        renewal._attempt(False, NOW)
    assert read_backoff(renewal.files.backoff) == Backoff(1, NOW.timestamp(), wish.timestamp())
