"""The gate: Deepchecks suites, fairness thresholds and the champion comparison."""
