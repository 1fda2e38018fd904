"""The history of runs (SQLite)."""
