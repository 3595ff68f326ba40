"""MIME parsing used by the IMAP index: structure, envelope, sections."""
