"""Certificates and cryptography."""
