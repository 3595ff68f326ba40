"""IMAP protocol states (RFC 3501 §3) and the sets of them a command is allowed in."""

NOT_AUTH, AUTH, SELECTED, LOGOUT = "not authenticated", "authenticated", "selected", "logout"
ANY = frozenset({NOT_AUTH, AUTH, SELECTED})
AUTHED = frozenset({AUTH, SELECTED})
PRE = frozenset({NOT_AUTH})
SEL = frozenset({SELECTED})
