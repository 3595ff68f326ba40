"""The sharded Maildir store (DESIGN.md "The sharded Maildir store")."""
