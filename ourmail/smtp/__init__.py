"""ESMTP: the server for MX and submission (later: LMTP, the outbound queue, DSN)."""
