"""Mailing lists run by ourmail itself (docs/lists.md): subscriptions, moderation, archive,
bounces, DMARC-safe distribution.  Reaches mail only through ``ourmail.interfaces``."""
