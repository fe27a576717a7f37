"""Projects: the tree, memberships and roles, managers' operations, the audit log view."""
