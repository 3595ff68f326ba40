"""The filter chain: checks on arriving mail (SPF, DKIM, DMARC, ARC, DNSBL, greylisting, ...).

See docs/filters.md.  Checks reach mail only through ``ourmail.interfaces``.
"""
