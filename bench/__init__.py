"""Benchmarks. Each writes its figures, and the command that produced them, to docs/performance.md."""
