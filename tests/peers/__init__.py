"""Real peers (Dovecot, …) started on loopback with private configuration, for tests and benches."""
