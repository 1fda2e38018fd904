"""Transports, the matcher and the tracer: probes out, outcome records in; no verdicts."""
