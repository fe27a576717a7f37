"""The audit log: every write records who changed what, in the same transaction."""
