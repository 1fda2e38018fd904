"""reachtest: contrast host reachability (ICMP) with service reachability, hop by hop."""

__version__ = "0.1.0"
