"""The classical models every run measures the network against, fitted on the network's own inputs.

  logistic_regression   scikit-learn's LogisticRegression on the network's preprocessed matrix
                        (models/preprocess.json): what a linear model makes of the same inputs
  gradient_boosting     scikit-learn's HistGradientBoostingClassifier, default settings, on the raw
                        feature columns the preprocessing names, categories as native categorical
                        features: the usual strongest baseline on tabular data

Nothing here names a column: the preprocessing spec says which columns are numbers and which
categories, and which categories training saw often enough to keep. scikit-learn is imported
when a model is fitted, so reading the config costs nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from gitml.checked_config import ConfigReader, suggest
from gitml.data.features import CategoricalFeature, PreprocessSpec, frame_columns

MODELS = ("logistic_regression", "gradient_boosting")
# What a reader calls each model (the report, the model card, the gate's reasons, the summary).
NAMES = {"logistic_regression": "logistic regression", "gradient_boosting": "gradient boosting"}
# HistGradientBoostingClassifier takes at most max_bins (255) values of a categorical feature; one of
# them is the "other" code, so a column keeps at most this many of its categories.
MAX_CATEGORIES = 254

Scorer = Callable[[pd.DataFrame], npt.NDArray[np.float32]]


@dataclass(frozen=True)
class BaselinesConfig:
    """params.yaml's `baselines` (conf/config.yaml): every value from there, none here."""

    enabled: bool
    models: tuple[str, ...]
    logistic_max_iter: int

    @classmethod
    def from_config(cls, cfg: Any, source: str) -> BaselinesConfig:
        reader = ConfigReader(source, "baselines", cfg, {"enabled", "models", "logistic_max_iter"})
        enabled = reader.boolean("enabled")
        models = reader.strings("models")
        for model in models:
            if model not in MODELS:
                reader.fail(f"models lists '{model}'{suggest(model, MODELS)}; the baselines are {', '.join(MODELS)}")
        if enabled and not models:
            reader.fail(f"models is empty; list some of {', '.join(MODELS)}, or set enabled: false to fit none")
        return cls(enabled, models, reader.integer("logistic_max_iter", minimum=1))


@dataclass(frozen=True)
class NativeColumns:
    """The raw feature columns as HistGradientBoostingClassifier takes them: numbers as floats with
    NaN for missing; each category as the code of one the preprocessing keeps (at most
    MAX_CATEGORIES, the most frequent in training), every other value (rare, unseen) as one more
    code, and missing as NaN, which the model treats as missing."""

    names: tuple[str, ...]
    codes: Mapping[str, Mapping[str, int]]  # categorical column -> kept category -> code
    bucketed: Mapping[str, int]  # columns with more categories than MAX_CATEGORIES -> how many went to "other"

    @classmethod
    def fit(cls, spec: PreprocessSpec, train: pd.DataFrame) -> NativeColumns:
        codes: dict[str, dict[str, int]] = {}
        bucketed: dict[str, int] = {}
        for feature in spec.features:
            if not isinstance(feature, CategoricalFeature):
                continue
            kept = feature.categories
            if len(kept) > MAX_CATEGORIES:
                counts = train[feature.name].dropna().astype(str).value_counts()
                order = sorted(range(len(kept)), key=lambda i: (-int(counts.get(kept[i], 0)), i))
                chosen = set(order[:MAX_CATEGORIES])
                bucketed[feature.name] = len(kept) - MAX_CATEGORIES
                kept = tuple(c for i, c in enumerate(kept) if i in chosen)
            codes[feature.name] = {category: code for code, category in enumerate(kept)}
        return cls(spec.input_columns, codes, bucketed)

    @property
    def categorical(self) -> npt.NDArray[np.bool_]:
        """Which columns of the matrix are categorical (HistGradientBoostingClassifier's categorical_features)."""
        return np.array([name in self.codes for name in self.names], dtype=bool)

    def matrix(self, frame: pd.DataFrame) -> npt.NDArray[np.float64]:
        columns = frame_columns(frame, self.names)
        out = np.empty((len(frame), len(self.names)), dtype=np.float64)
        for i, name in enumerate(self.names):
            values = columns[name]
            if name not in self.codes:
                out[:, i] = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64, na_value=np.nan)
                continue
            series = pd.Series(values, dtype=object)
            known = series.astype(str).map(self.codes[name]).to_numpy(np.float64, na_value=np.nan)
            other = float(len(self.codes[name]))
            out[:, i] = np.where(series.isna(), np.nan, np.where(np.isnan(known), other, known))
        return out


@dataclass(frozen=True)
class Fitted:
    """A fitted baseline: how it scores a split, and what it records about its fit."""

    score: Scorer
    details: dict[str, Any]


def fit_logistic_regression(
    spec: PreprocessSpec, x: npt.NDArray[np.float32], y: npt.NDArray[np.float32], seed: int, max_iter: int
) -> Fitted:
    """LogisticRegression (lbfgs, L2 with C=1) on the network's matrix `x`, whose rows `spec` makes."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        # Whether it converged is recorded (and the stage's message says so), not printed as a warning.
        warnings.simplefilter("ignore", ConvergenceWarning)
        # scikit-learn 1.5 passes lbfgs an option SciPy deprecates: theirs to change, nothing to act on here.
        warnings.filterwarnings("ignore", "scipy.optimize: The `disp` and `iprint`", DeprecationWarning)
        model = LogisticRegression(max_iter=max_iter, random_state=seed).fit(x, y.astype(np.int64))
    iterations = int(np.max(model.n_iter_))

    def score(frame: pd.DataFrame) -> npt.NDArray[np.float32]:
        matrix = spec.transform(frame_columns(frame, spec.input_columns))
        return np.asarray(model.predict_proba(matrix)[:, 1], dtype=np.float32)

    details = {"inputs": spec.width, "iterations": iterations, "converged": iterations < max_iter}
    return Fitted(score, details)


def fit_gradient_boosting(spec: PreprocessSpec, train: pd.DataFrame, y: npt.NDArray[np.float32], seed: int) -> Fitted:
    """HistGradientBoostingClassifier with its default settings on the raw feature columns."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    columns = NativeColumns.fit(spec, train)
    categorical = columns.categorical
    model = HistGradientBoostingClassifier(
        categorical_features=categorical if categorical.any() else None, random_state=seed
    ).fit(columns.matrix(train), y.astype(np.int64))

    def score(frame: pd.DataFrame) -> npt.NDArray[np.float32]:
        return np.asarray(model.predict_proba(columns.matrix(frame))[:, 1], dtype=np.float32)

    details = {
        "inputs": len(columns.names),
        "categorical": sorted(columns.codes),
        "categories_bucketed": dict(columns.bucketed),
        "iterations": int(model.n_iter_),
    }
    return Fitted(score, details)


def in_order(models: Mapping[str, Any]) -> list[str]:
    """The baselines of reports/baselines.json in MODELS' order (the file sorts its keys), any other last."""
    return [name for name in MODELS if name in models] + sorted(name for name in models if name not in MODELS)


def best_test(baselines: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """The best baseline of reports/baselines.json and its test metrics; None when the baselines
    are off or none has a test AUROC."""
    name = baselines.get("best")
    models = baselines.get("models") or {}
    if not baselines.get("enabled") or name not in models:
        return None
    return str(name), models[name]["test"]


def best(models: Mapping[str, Mapping[str, Any]], order: Sequence[str] = MODELS) -> str | None:
    """The baseline with the highest test AUROC (the first listed on a tie); None when none has one."""
    scored = [name for name in order if isinstance((models.get(name) or {}).get("test", {}).get("auroc"), float)]
    return max(scored, key=lambda name: models[name]["test"]["auroc"], default=None)
