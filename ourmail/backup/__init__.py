"""Backups of a running data folder, restores, and the data folder's format version."""
