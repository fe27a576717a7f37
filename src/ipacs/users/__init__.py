"""User accounts: the admin API, `/users/me`, and the service the CLI shares."""
