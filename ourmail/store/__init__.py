"""The sharded Maildir store (docs/architecture.md#the-sharded-maildir-store)."""
