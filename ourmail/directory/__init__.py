"""Recipient lookup: which addresses are local users, which are remote."""
