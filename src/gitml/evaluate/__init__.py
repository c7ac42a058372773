"""Evaluation: metrics of the exported model on the test split, per group, and the plot data."""

from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.floating[Any]]  # scores or 0/1 labels
