"""IMAP4rev1 (RFC 3501): the server, its parser, FETCH and SEARCH."""
