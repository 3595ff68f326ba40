"""Mail bodies made safe to show in the browser: hostile HTML sanitised, plain text escaped.

The message view calls :func:`sanitise` for a ``text/html`` part and :func:`text_to_html` for
a ``text/plain`` one, and serves the result (wrapped by :func:`frame_document`) in a sandboxed
frame with the headers of :func:`frame_headers`.  Two independent walls stand between a hostile
message and the reader:

1. the sanitiser, nh3 (Ammonia, an html5ever parser and an allow-list), keeps only tags,
   attributes, URL schemes and CSS properties that mail needs and that run no code; and
2. the frame's Content-Security-Policy (:func:`frame_csp`): ``sandbox`` without
   ``allow-scripts`` or ``allow-same-origin``, ``default-src 'none'``, images from ourmail only
   unless the reader allowed remote content.

Remote content (``http(s):`` images, CSS ``url()``, ``background`` attributes, ``srcset``) is a
tracking beacon: it is cut unless ``allow_remote``, and :attr:`SafeHTML.blocked_remote` says
that something was cut, so the view can offer "show images".  ``cid:`` URLs (RFC 2392) name
parts of the same message and are mapped by the caller to same-origin addresses.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote

import attrs
import nh3
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from ourmail.web.plaintext import text_to_html
from ourmail.web.safecss import PROPERTIES, filter_style
from ourmail.web.safehtml import SafeHTML

__all__ = [
    "SafeHTML",
    "frame_csp",
    "frame_document",
    "frame_headers",
    "sanitise",
    "sanitise_in_thread",
    "text_to_html",
]

# The most HTML text sanitise() takes (characters).  The view reads a bounded content window
# of the part anyway; this keeps one call's memory bounded whatever the caller passes.
MAX_HTML_CHARS = 16 * 1024 * 1024

# Tags that ordinary mail uses and that run nothing: nh3's defaults without image maps
# (area/map), plus tables and the presentational tags of Outlook and old newsletters.
TAGS = frozenset(
    (nh3.ALLOWED_TAGS - {"area", "map"})
    | {"address", "big", "center", "font", "main", "section", "table", "tfoot"}
)

# Tags removed together with everything inside them.  Anything not in TAGS and not here
# (form, input, button, meta, base, link...) is removed but its text is kept.
CLEAN_CONTENT_TAGS = frozenset(
    {
        "applet", "embed", "frame", "frameset", "head", "iframe", "math", "noembed",
        "noframes", "noscript", "object", "option", "plaintext", "script", "select", "style",
        "svg", "template", "textarea", "title", "xmp",
    }
)  # fmt: skip

_TABLE_PARTS = {"align", "background", "bgcolor", "height", "valign", "width"}
ATTRIBUTES: dict[str, set[str]] = {
    "*": {"align", "dir", "lang", "style", "title"},
    "a": {"href"},
    "img": {"alt", "border", "height", "hspace", "src", "srcset", "vspace", "width"},
    "font": {"color", "face", "size"},
    "table": _TABLE_PARTS | {"border", "cellpadding", "cellspacing", "summary"},
    "tbody": _TABLE_PARTS,
    "thead": _TABLE_PARTS,
    "tfoot": _TABLE_PARTS,
    "tr": _TABLE_PARTS,
    "td": _TABLE_PARTS | {"colspan", "nowrap", "rowspan"},
    "th": _TABLE_PARTS | {"colspan", "nowrap", "rowspan", "scope"},
    "col": {"span", "width", "valign"},
    "colgroup": {"span", "width", "valign"},
    "hr": {"color", "noshade", "size", "width"},
    "ol": {"start", "type"},
    "ul": {"type"},
    "li": {"type", "value"},
    "div": {"bgcolor"},
    "span": {"bgcolor"},
    "p": {"bgcolor"},
}

# Schemes nh3 lets through href/src before our own check; data:, javascript:, vbscript: and
# everything else never reach the filter.
URL_SCHEMES = frozenset({"cid", "http", "https", "mailto"})
_LINK_SCHEMES = ("http:", "https:", "mailto:")
_REMOTE_SCHEMES = ("http:", "https:")

# Links open in a new browsing context that cannot reach the frame (rel) and outside the sandbox.
_LINK_TARGET = {"a": {"target": "_blank"}}
_LINK_REL = "noopener noreferrer"

# Pass one: structure, attributes, schemes; style values into nh3's canonical form.
_STRUCTURE = nh3.Cleaner(
    tags=TAGS,
    clean_content_tags=CLEAN_CONTENT_TAGS,
    attributes=ATTRIBUTES,
    url_schemes=URL_SCHEMES,
    url_relative="deny",
    filter_style_properties=PROPERTIES,
    link_rel=_LINK_REL,
    strip_comments=True,
)


class HTMLTooLarge(ValueError):
    """The HTML given to :func:`sanitise` is over :data:`MAX_HTML_CHARS`."""


@attrs.define
class _UrlPolicy:
    """The per-message decisions on URLs, as an nh3 ``attribute_filter``."""

    allow_remote: bool
    cid: Callable[[str], str | None]
    blocked_remote: bool = False
    mapped: set[str] = attrs.field(factory=set)

    def resolve_cid(self, url: str) -> str | None:
        """``cid:<addr-spec>`` (RFC 2392 §2, %-encoded) -> the part's same-origin address."""
        target = self.cid(unquote(url[len("cid:") :]))
        if target is not None:
            self.mapped.add(target)
        return target

    def remote(self, url: str) -> str | None:
        """An ``http(s):`` address that the browser would fetch by itself."""
        if self.allow_remote:
            return url
        self.blocked_remote = True
        return None

    def fetched(self, url: str) -> str | None:
        """A URL the browser loads unasked (``src``, ``background``)."""
        lowered = url.lower()
        if lowered.startswith("cid:"):
            return self.resolve_cid(url)
        if lowered.startswith(_REMOTE_SCHEMES):
            return self.remote(url)
        return None

    def __call__(self, tag: str, attribute: str, value: str) -> str | None:
        """nh3's callback: the final say on every kept attribute (nh3 checks no scheme after it)."""
        if attribute == "href":
            if value.lower().startswith("cid:"):
                return self.resolve_cid(value)
            return value if value.lower().startswith(_LINK_SCHEMES) else None
        if attribute in ("src", "background"):
            return self.fetched(value.strip())
        if attribute == "srcset":
            # Never kept (src is the fallback every browser uses); only noted as blocked.
            if not self.allow_remote and "http" in value.lower():
                self.blocked_remote = True
            return None
        if attribute == "style":
            style = filter_style(
                value, allow_remote=self.allow_remote, resolve_cid=self.resolve_cid
            )
            self.blocked_remote = self.blocked_remote or style.blocked_remote
            return style.value
        return value

    def relative(self, url: str) -> str | None:
        """Relative URLs survive only as the cid addresses this policy made itself."""
        return url if url in self.mapped else None


def sanitise(html: str, *, allow_remote: bool, cid: Callable[[str], str | None]) -> SafeHTML:
    """Sanitise one ``text/html`` body for the message frame.

    ``cid`` maps a Content-ID (the addr-spec of ``cid:`` URLs, without ``<>``, RFC 2392) to the
    same-origin address the view serves that part at, or ``None`` if the message has no such
    part.  With ``allow_remote`` false, ``http(s):`` images and CSS ``url()``\\ s are removed and
    the result's ``blocked_remote`` says whether any was.  Raises :class:`HTMLTooLarge` past
    :data:`MAX_HTML_CHARS`.
    """
    if len(html) > MAX_HTML_CHARS:
        raise HTMLTooLarge(f"HTML body of {len(html)} characters, over {MAX_HTML_CHARS}")
    structured = _STRUCTURE.clean(html)
    # Pass two sees every style value in nh3's canonical form, which only pass one makes.
    policy = _UrlPolicy(allow_remote, cid)
    urls = nh3.Cleaner(
        tags=TAGS,
        clean_content_tags=CLEAN_CONTENT_TAGS,
        attributes=ATTRIBUTES,
        attribute_filter=policy,
        url_schemes=URL_SCHEMES,
        url_relative=policy.relative,
        filter_style_properties=PROPERTIES,
        set_tag_attribute_values=_LINK_TARGET,
        link_rel=_LINK_REL,
        strip_comments=True,
    )
    return SafeHTML(urls.clean(structured), policy.blocked_remote)


def sanitise_in_thread(
    html: str, *, allow_remote: bool, cid: Callable[[str], str | None]
) -> Deferred[SafeHTML]:
    """:func:`sanitise` in the reactor's thread pool, for the web handlers.

    A megabyte of HTML takes about half a second; nh3 releases the GIL while it parses, so
    the reactor keeps serving meanwhile.  ``cid`` is then called in that thread: it must only
    look things up (a dict of the message's parts), never touch the reactor.
    """
    result: Deferred[SafeHTML] = deferToThread(sanitise, html, allow_remote=allow_remote, cid=cid)
    return result


def frame_csp(allow_remote: bool) -> str:
    """The Content-Security-Policy (CSP Level 3) the message frame must be served with.

    ``sandbox`` without ``allow-scripts`` runs no script even if one got through the
    sanitiser, and without ``allow-same-origin`` the frame cannot read the webmail's cookies
    or DOM; ``allow-popups-to-escape-sandbox`` lets links (``target="_blank"``) open as normal
    pages.  Nothing loads but images and those only from ourmail (``cid:`` parts), or from
    anywhere once the reader allowed remote content.
    """
    images = "'self' https: http:" if allow_remote else "'self'"
    return "; ".join(
        (
            "default-src 'none'",
            f"img-src {images}",
            "style-src 'unsafe-inline'",
            "font-src 'none'",
            "media-src 'none'",
            "form-action 'none'",
            "base-uri 'none'",
            "frame-ancestors 'self'",
            "sandbox allow-popups allow-popups-to-escape-sandbox",
        )
    )


def frame_headers(allow_remote: bool) -> dict[str, str]:
    """Every response header the frame's document needs, the CSP included."""
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": frame_csp(allow_remote),
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store",
    }


def frame_document(body: SafeHTML) -> str:
    """The whole document served in the frame around a sanitised body.

    Turns off DNS prefetching of link hosts (a tracking leak no CSP covers) and makes links
    open outside the frame.
    """
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        '<meta http-equiv="x-dns-prefetch-control" content="off">'
        '<meta name="referrer" content="no-referrer">'
        f"</head><body>{body.html}</body></html>"
    )
