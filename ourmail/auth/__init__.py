"""Accounts, password hashing, the credentials checker, the realm and login throttling."""
