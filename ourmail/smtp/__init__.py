"""ESMTP for MX and submission, LMTP, submission rules, delivery; the outbound queue is
``ourmail.queue``."""
