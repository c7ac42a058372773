"""The gate: Deepchecks suites, fairness thresholds, the champion comparison and the baselines."""

# The sections of params.yaml's `gates` (conf/gates/).
SECTIONS = frozenset({"deepchecks", "fairness", "champion", "baselines"})
