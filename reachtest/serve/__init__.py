"""Long-running services: the Prometheus exporter (``reachtest exporter``)."""
