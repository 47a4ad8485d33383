"""Plan -> what each consumer reads: pure data, no I/O (unit-tested without servers)."""
