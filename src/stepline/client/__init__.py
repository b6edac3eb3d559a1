"""Clients: the sans-I/O session, the sync and trio subprocess clients, and the in-process API."""
