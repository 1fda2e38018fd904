"""Pure functions from outcomes to pandas frames, hop statistics, verdicts and findings."""
