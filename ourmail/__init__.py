"""ourmail: an integrated mail server on Twisted (ESMTP, IMAP4, POP3) over a sharded Maildir."""

__version__ = "0.1.0"
