"""The web interface (klein): webmail, set-up, admin, autoconfig, metrics.

A feature package: it reaches mail only through :mod:`ourmail.interfaces` and the MIME helpers
of :mod:`ourmail.mime`, never a protocol or the concrete store (tests/unit/test_layers.py).
"""
