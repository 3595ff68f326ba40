"""Network plumbing shared by the protocols: TLS contexts and the bounded line protocol."""
