"""The vault: every message that enters or leaves the organisation, kept tamper-evident
(docs/vault.md; the file format in docs/vault-format.md)."""
