"""The network-namespace lab: topologies, scenarios with ground truth, servers."""
