"""Database plumbing: engine, sessions, the declarative base and portable types."""
