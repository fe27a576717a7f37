"""Who is calling: HTTP Basic and session cookies resolved to a `Caller`."""
