"""POP3 (RFC 1939) over the store."""
