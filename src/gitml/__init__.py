"""gitml: one tabular model, run the GitOps way."""

__version__ = "0.1.0"
