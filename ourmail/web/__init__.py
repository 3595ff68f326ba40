"""The webmail (issue 16): a klein application on the server's reactor.

* ``app.py``: the routes (login, logout, the folder list) and the HTTPS site;
* ``sessions.py``: server-side sessions with idle and absolute expiry and a CSRF token;
* ``request.py``: every response's security headers and the request body limit;
* ``redirect.py``: the ``http`` listener, which only redirects to HTTPS;
* ``i18n.py``: the gettext catalogues (English, Greek) and the choice of language.

Implementation notes, kept by every change:

* The webmail reaches mail only through ``ourmail.interfaces`` (the avatar is an IUserStore
  from the same portal as IMAP), and logs in through the same Authenticator, so the
  failed-login throttle is shared with IMAP, POP3 and SMTP AUTH.
* Nothing blocks the reactor thread; every request body is bounded (``request.py``).
* Every state-changing request is a POST carrying the CSRF token; every page is rendered
  by jinja2 with autoescape on; no inline script (the CSP forbids it).
"""
