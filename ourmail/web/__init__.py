"""The webmail (issue 16): a klein app over the store's interfaces, safe against hostile mail."""
