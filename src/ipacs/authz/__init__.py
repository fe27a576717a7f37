"""What a caller may do: roles, effective roles, and the readable-projects filter."""
