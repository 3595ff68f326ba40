"""The mailing lists' public pages (issue 19 point 5, docs/lists.md), for anyone, no login:

* ``GET /lists/<list>``: the list's page: its name, description and a form to ask to
  subscribe or unsubscribe an address (never the members), and on a list with a digest to
  subscribe with the digest, or for a member to choose each post or the daily digest.  A
  list that does not exist or is not advertised answers the same 404.
* ``POST /lists/<list>``: the request (``requests.request`` with the client's IP address,
  an IPv6 one by its /64, rate-limited); the answer is the same whether or not the address
  is a member, so the form does not tell who is (429 when over a limit).  The form carries
  the browser's CSRF token (the login form's double-submit cookie).
* ``GET /lists/confirm/<token>``: what confirming will do, and a button; ``POST`` confirms.
  Mail scanners follow the links in mail with GET, so GET never acts.
* ``POST /lists/unsubscribe/<list>/<member>/<signature>`` with ``List-Unsubscribe=One-Click``
  (RFC 8058 §3.1): unsubscribes at once, without login, cookies or CSRF token: the HMAC
  signature is the proof.  A list that does not exist, an address that is not on it and a
  wrong signature all get the same 404.  ``GET`` of the same URL asks first (RFC 8058 §3.2:
  GET must not unsubscribe).
"""

from __future__ import annotations

import importlib
import ipaddress
from collections.abc import Awaitable, Callable
from typing import cast

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from ourmail.addresses import AddressError, normalise_address
from ourmail.lists import requests, tokens
from ourmail.lists.context import ListContext
from ourmail.lists.listdb import Token
from ourmail.lists.model import ListSettings
from ourmail.web.adminpages import MAX_ADDRESS
from ourmail.web.pages import LOGIN_COOKIE, Pages
from ourmail.web.sessions import same_token

log = Logger()

#: A confirmer of a token (``requests.confirm``, ``moderation.confirm``).
Confirmer = Callable[[ListContext, ListSettings, Token, str], Awaitable[str]]
#: The value of the one-click POST's body (RFC 8058 §3.1).
ONE_CLICK = "One-Click"


class ListPublicPages(Pages):
    """The lists' public routes (see the module docstring)."""

    app = Pages.app

    @property
    def list_context(self) -> ListContext | None:
        lists = self.services.lists
        return None if lists is None else lists.ctx

    async def _list(self, address: str, advertised: bool) -> ListSettings | None:
        """The list at ``address`` (with ``advertised``: only if it has a public page)."""
        ctx = self.list_context
        if ctx is None or len(address) > MAX_ADDRESS:
            return None
        try:
            address = normalise_address(address)
        except AddressError:
            return None
        lst = await ctx.run(ctx.db.get, address)
        return None if lst is None or (advertised and not lst.advertised) else lst

    def _no_list(self, request: IRequest) -> bytes:
        _ = self.gettext(request)
        return self.render(
            request, "lists_public.html", 404, csrf="", error=_("There is no such list.")
        )

    def _login_csrf(self, request: IRequest) -> bool:
        cookie = request.getCookie(LOGIN_COOKIE)
        token = cookie.decode("ascii", "replace") if cookie else ""
        return bool(token) and same_token(self.form(request, "csrf"), token)

    # -- the list's page -----------------------------------------------------------------

    @app.route("/lists/<string:address>", methods=["GET"])
    async def list_public_page(self, request: IRequest, address: str) -> bytes:
        lst = await self._list(address, advertised=True)
        if lst is None:
            return self._no_list(request)
        return self.render(request, "lists_public.html", csrf=self.login_token(request), lst=lst)

    @app.route("/lists/<string:address>", methods=["POST"])
    async def list_public_request(self, request: IRequest, address: str) -> bytes:
        ctx = self.list_context
        lst = await self._list(address, advertised=True)
        if ctx is None or lst is None:
            return self._no_list(request)
        if not self._login_csrf(request):
            return self.forbidden(request)
        _ = self.gettext(request)
        csrf = self.login_token(request)
        action = self.form(request, "action", 20)
        given = (self.form(request, "address", MAX_ADDRESS) or "").strip()
        try:
            member = normalise_address(given)
        except AddressError:
            member = ""
        if action not in requests.ACTIONS or not member:
            error = _("Enter a valid address.")
            return self.render(
                request, "lists_public.html", 400, csrf=csrf, lst=lst, error=error, given=given
            )
        if action == "digest" and not lst.digest:
            error = _("This list has no digest.")
            return self.render(
                request, "lists_public.html", 400, csrf=csrf, lst=lst, error=error, given=given
            )
        digest = action == "subscribe" and lst.digest and self.form(request, "digest", 5) == "yes"
        data = requests.DIGEST_CHOICE if digest else ""
        client = client_key(getattr(request.getClientAddress(), "host", ""))
        result = await requests.request(ctx, lst, member, action, client, "web", data)
        if result == requests.LIMITED:
            error = _("Too many requests. Please try again in an hour.")
            return self.render(request, "lists_public.html", 429, csrf=csrf, lst=lst, error=error)
        # The same answer whether or not the address is a member (results "already",
        # "not-member", "disabled").
        if action == "subscribe":
            done = _("If the address can be subscribed, a confirmation is on its way.")
        else:
            done = _("If the address is subscribed, a confirmation is on its way.")
        return self.render(request, "lists_public.html", csrf=csrf, lst=lst, done=done)

    # -- confirmations -------------------------------------------------------------------

    @app.route("/lists/confirm/<string:token>", methods=["GET"])
    async def list_confirm_page(self, request: IRequest, token: str) -> bytes:
        ctx = self.list_context
        pending = None if ctx is None else await tokens.peek(ctx, token)
        if pending is None:
            return self._bad_token(request)
        return self.render(
            request,
            "lists_confirm.html",
            csrf=self.login_token(request),
            question=self._question(request, pending),
            token=token,
        )

    @app.route("/lists/confirm/<string:token>", methods=["POST"])
    async def list_confirm(self, request: IRequest, token: str) -> bytes:
        if not self._login_csrf(request):
            return self.forbidden(request)
        ctx = self.list_context
        pending = None if ctx is None else await tokens.peek(ctx, token)
        if ctx is None or pending is None:
            return self._bad_token(request)
        confirmer = _confirmer(pending.action)
        lst = await ctx.run(ctx.db.get, pending.list)
        if confirmer is None or lst is None:
            return self._bad_token(request)
        # The token is used up only once the confirmer has succeeded (tokens.use).
        used = await tokens.use(ctx, token, lambda found: confirmer(ctx, lst, found, ""))
        if used is None:  # confirmed by another request since the peek
            return self._bad_token(request)
        return self.render(
            request,
            "lists_confirm.html",
            csrf=self.login_token(request),
            done=self._outcome(request, *used),
        )

    def _bad_token(self, request: IRequest) -> bytes:
        _ = self.gettext(request)
        error = _("This confirmation link is not valid, was used already or has expired.")
        return self.render(request, "lists_confirm.html", 404, csrf="", error=error)

    def _question(self, request: IRequest, token: Token) -> str:
        _ = self.gettext(request)
        questions = {
            "subscribe": _("Subscribe {address} to the mailing list {list}?"),
            "unsubscribe": _("Unsubscribe {address} from the mailing list {list}?"),
            "approve": _("Approve the post held for the mailing list {list}?"),
            "reject": _("Reject the post held for the mailing list {list}?"),
            "digest": _("Send {address} one daily digest of the mailing list {list}?"),
            "each": _("Send {address} each post of the mailing list {list}?"),
        }
        if token.action == "subscribe" and requests.approved(token.data):
            question = _("Let {address} join the mailing list {list}?")
        elif token.action == "subscribe" and requests.wants_digest(token.data):
            question = _("Subscribe {address} to the mailing list {list}, with the daily digest?")
        else:
            question = questions.get(token.action, _("Confirm for the mailing list {list}?"))
        return question.format(address=token.address, list=token.list)

    def _outcome(self, request: IRequest, token: Token, result: str) -> str:
        _ = self.gettext(request)
        outcomes = {
            requests.SUBSCRIBED: _("{address} is now subscribed to {list}."),
            requests.AWAITING_APPROVAL: _("Thank you: the list's owners will decide."),
            requests.ALREADY_MEMBER: _("{address} was subscribed to {list} already."),
            requests.UNSUBSCRIBED: _("{address} is no longer subscribed to {list}."),
            requests.NOT_MEMBER: _("{address} was not subscribed to {list}."),
            requests.NO_DIGEST: _("The list {list} has no digest."),
            requests.DISABLED: _("The owners of {list} have stopped its posts to {address}."),
        }
        digest = token.action == "digest"
        if result in (requests.SWITCHED, requests.REENABLED, requests.ALREADY) and (
            token.action in requests.MODES
        ):
            text = (
                _("{address} gets the daily digest of {list}.")
                if digest
                else _("{address} gets each post of {list}.")
            )
        else:
            text = outcomes.get(result, _("Done."))
        return text.format(address=token.address, list=token.list)

    # -- one-click unsubscribe (RFC 8058) ----------------------------------------------------

    @app.route("/lists/unsubscribe/<path:path>", methods=["GET"])
    async def list_unsubscribe_page(self, request: IRequest, path: str) -> bytes:
        found = await self._one_click_target(*_one_click_path(path))
        _ = self.gettext(request)
        if found is None:
            error = _("This unsubscribe link is not valid.")
            return self.render(request, "lists_unsubscribe.html", 404, csrf="", error=error)
        question = _("Unsubscribe {address} from the mailing list {list}?").format(
            address=found[1], list=found[0].address
        )
        return self.render(request, "lists_unsubscribe.html", csrf="", question=question)

    @app.route("/lists/unsubscribe/<path:path>", methods=["POST"])
    async def list_unsubscribe(self, request: IRequest, path: str) -> bytes:
        _ = self.gettext(request)
        address, member, signature = _one_click_path(path)
        if self.form(request, "List-Unsubscribe", 20) != ONE_CLICK:
            error = _("This request is not valid.")
            return self.render(request, "lists_unsubscribe.html", 400, csrf="", error=error)
        ctx = self.list_context
        found = await self._list(address, advertised=False)
        # One answer for no such list, no such member and a bad signature alike: the link
        # tells nobody which lists exist nor who is on them.
        if (
            ctx is None
            or found is None
            or not await requests.one_click(ctx, found, member, signature)
        ):
            error = _("This unsubscribe link is not valid.")
            return self.render(request, "lists_unsubscribe.html", 404, csrf="", error=error)
        done = _("{address} is no longer subscribed to {list}.").format(
            address=member, list=found.address
        )
        return self.render(request, "lists_unsubscribe.html", csrf="", done=done)

    async def _one_click_target(
        self, address: str, member: str, signature: str
    ) -> tuple[ListSettings, str] | None:
        """The list and the member of a one-click URL whose signature is valid."""
        ctx = self.list_context
        lst = await self._list(address, advertised=False)
        if ctx is None or lst is None:
            return None
        try:
            member = normalise_address(member)
        except AddressError:
            return None
        if not requests.signed(ctx, lst, member, signature):
            return None
        return lst, member


def client_key(host: str) -> str:
    """The key a web client's requests are counted under: its IPv4 address (also one mapped
    into IPv6), or the /64 its IPv6 address is in, as one site (or one host) owns a whole
    /64 (RFC 4291 §2.5.4); anything else as it is."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def _one_click_path(path: str) -> tuple[str, str, str]:
    """A one-click URL's list, member and signature.  The path's segments arrive decoded, so
    a member's ``/`` (legal in a local part) splits it: the member is what lies between the
    list (no ``/``) and the signature (hex).  Other shapes give ("", "", "")."""
    address, _, rest = path.partition("/")
    member, _, signature = rest.rpartition("/")
    return (address, member, signature) if member else ("", "", "")


def _confirmer(action: str) -> Confirmer | None:
    """The confirmer of ``action``: the requests part's own, or the moderation part's,
    imported when first needed (it is another part of the list manager)."""
    if action in ("subscribe", "unsubscribe", *requests.MODES):
        return requests.confirm
    if action not in ("approve", "reject"):
        return None
    try:
        moderation = importlib.import_module("ourmail.lists.moderation")
    except ImportError:
        log.error("list confirmation of {action}: no moderation here", action=action)
        return None
    return cast(Confirmer | None, getattr(moderation, "confirm", None))
