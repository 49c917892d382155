"""Contracts, keys, rate limits and the ledger, against real SQLite, PostgreSQL and Redis."""
