"""Durable state: the store seam, its SQLite backend, recovery and the durable submit pipeline."""
