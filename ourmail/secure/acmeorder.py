"""One ACME (RFC 8555) certificate order with certbot's ``acme`` library: account, order,
HTTP-01 challenges, finalisation, download.

Everything here blocks (``requests``): it runs in a thread (``deferToThread``), never on the
reactor.  The challenges are handed out through ``publish``/``withdraw``, which the caller
makes safe to call from that thread.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

import attrs
import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwk import JWKRSA

from ourmail.fsutil import write_atomic

#: How long the CA may take to validate every name and issue (RFC 8555 §7.1.6 polling).
ORDER_TIMEOUT = datetime.timedelta(seconds=180)
USER_AGENT = "ourmail (acme-python)"
#: The most names Let's Encrypt puts on one certificate (its "Rate Limits" page).
MAX_NAMES = 100


class OrderFailed(Exception):
    """The CA refused or failed the order; the message says why, ``names`` which names did
    not validate (empty when the failure was not a validation's)."""

    def __init__(self, message: str, names: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.names = names


class RateLimited(OrderFailed):
    """The CA refused for now: too many requests (RFC 8555 §6.6, ``rateLimited``);
    ``retry_after`` is when its ``Retry-After`` header says to ask again (local time), or
    None."""

    def __init__(self, message: str, retry_after: datetime.datetime | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Network(client.ClientNetwork):
    """acme's network client, keeping the ``Retry-After`` of a rate-limit problem (acme
    drops the response's headers from the errors it raises)."""

    @classmethod
    def _check_response(
        cls, response: requests.Response, content_type: str | None = None
    ) -> requests.Response:
        try:
            return super()._check_response(response, content_type)
        except messages.Error as e:
            if e.code != "rateLimited":
                raise
            after = response.headers.get("Retry-After")
            when = client.ClientV2.retry_after(response, 0) if after else None
            raise RateLimited(f"the CA limits the requests: {e}", when) from e


@attrs.frozen
class CAServer:
    """Which ACME server, and how to reach it."""

    #: The directory URL (RFC 8555 §7.1.1).
    directory: str
    #: The account's contact address, or empty.
    email: str = ""
    #: CA certificates (PEM) for the ACME server's own HTTPS; None: the system's.
    ca_file: Path | None = None


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def account_key(path: Path) -> JWKRSA:
    """The account key at ``path``, made (RSA 2048, mode 0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, _pem(rsa.generate_private_key(65537, 2048)), 0o600)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise OrderFailed(f"{path} is not an RSA key")
    return JWKRSA(key=key)


def _account(acme: client.ClientV2, email: str) -> None:
    """Register the account (RFC 8555 §7.3), or find it again when the key already has one."""
    registration = messages.NewRegistration.from_data(
        email=email or None, terms_of_service_agreed=True
    )
    try:
        acme.new_account(registration)
    except errors.ConflictError as e:
        existing = messages.RegistrationResource(uri=e.location, body=messages.Registration())
        acme.query_registration(existing)


def _http01(authz: messages.AuthorizationResource) -> messages.ChallengeBody:
    for challenge in authz.body.challenges:
        if isinstance(challenge.chall, challenges.HTTP01):
            return challenge
    name = authz.body.identifier.value
    raise OrderFailed(f"the CA offers no http-01 challenge for {name}")


def order_certificate(
    ca: CAServer,
    key_path: Path,
    names: tuple[str, ...],
    publish: Callable[[str, str], None],
    withdraw: Callable[[str], None],
) -> tuple[bytes, bytes]:
    """A certificate for ``names`` as (PEM chain, PEM key): a new P-256 key, every name
    validated over HTTP-01 (RFC 8555 §8.3; ``publish(token, key_authorisation)`` must make
    the answer reachable before it returns).  Raises :class:`OrderFailed` (:class:`RateLimited`
    when the CA says to wait), ``acme`` or ``requests`` errors."""
    if len(names) > MAX_NAMES:
        raise OrderFailed(
            f"{len(names)} names are more than the {MAX_NAMES} a certificate may carry; "
            "serve fewer domains from this host name (docs/certificates.md)"
        )
    jwk = account_key(key_path)
    verify: object = str(ca.ca_file) if ca.ca_file else True
    net = _Network(jwk, user_agent=USER_AGENT)
    net.verify_ssl = verify  # type: ignore[assignment]  # requests takes a CA file path too
    acme = client.ClientV2(client.ClientV2.get_directory(ca.directory, net), net)
    _account(acme, ca.email)
    certificate_key = _pem(ec.generate_private_key(ec.SECP256R1()))
    order = acme.new_order(crypto_util.make_csr(certificate_key, list(names)))
    tokens: list[str] = []
    try:
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue  # validated for this account not long ago (RFC 8555 §7.1.4)
            challenge = _http01(authz)
            response, validation = challenge.response_and_validation(jwk)
            token = challenge.chall.encode("token")
            publish(token, validation)
            tokens.append(token)
            acme.answer_challenge(challenge, response)
        deadline = datetime.datetime.now() + ORDER_TIMEOUT
        done = acme.poll_and_finalize(order, deadline)
    except errors.ValidationError as e:
        problems = [
            f"{a.body.identifier.value}: {c.error.detail if c.error else c.status}"
            for a in e.failed_authzrs
            for c in a.body.challenges
            if c.error is not None
        ]
        failed = tuple(a.body.identifier.value for a in e.failed_authzrs)
        raise OrderFailed("validation failed: " + "; ".join(problems), failed) from e
    finally:
        for token in tokens:
            withdraw(token)
    if not done.fullchain_pem:
        raise OrderFailed("the CA sent no certificate")
    return done.fullchain_pem.encode("ascii"), certificate_key
