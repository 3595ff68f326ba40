"""Structured log events for log shippers and fail2ban: one per login attempt and one per
SMTP/LMTP transaction (``events``), and the JSON-lines log format (``jsonlog``).  See
docs/logging.md."""
