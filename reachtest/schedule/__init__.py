"""Scheduled runs: the TOML configuration, expectations, `run` for cron."""
