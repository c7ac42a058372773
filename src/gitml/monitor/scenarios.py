"""Drift scenarios: a sample of "production" rows drawn from held-back real rows, shifted or not.

`gitml simulate` replays such a sample through a running server, and the drift check's calibration
draws thousands of them, so a draw is a handful of vectorised NumPy operations. A draw is always
real rows, drawn with replacement (n may exceed the rows there are), so a shifted column stays
consistent with every other column of its row:

  none                        uniform
  shift:COLUMN=SD             exponential tilting: row weights ∝ exp(λ·z), z the column standardised,
                              λ solved so that the weighted mean lies SD standard deviations from the
                              rows' mean (missing values keep their share)
  new-category:COLUMN=SHARE   uniform; that share of the rows get a category the schema does not declare
  label:CHANGE                positives and negatives reweighted: the positive rate moves by CHANGE
  score:SD                    as shift, on the model's scores of the rows (passed in: no model here)
  bias:ATTRIBUTE=GROUP:SHARE  uniform; that share of the group's negatives, those the model scores
                              lowest, get the positive class as their feedback label: people the
                              model turns down turn out qualified, and the group's live true-positive
                              rate falls (needs the scores, as score does)

Every draw has a `feedback_label` column: the label that feedback would send, the true label
except where the scenario changes it (bias). Amounts are what the scenario moves in expectation;
a draw of n rows adds sampling noise (sd / sqrt(n) for a mean).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from gitml.checked_config import suggest
from gitml.data.schema import Column, DatasetSchema
from gitml.errors import GitmlError

KINDS = ("none", "shift", "new-category", "label", "score", "bias")
FORMS = (
    "none | shift:COLUMN=SD | new-category:COLUMN=SHARE | label:CHANGE | score:SD | bias:ATTRIBUTE=GROUP:SHARE "
    "(e.g. shift:age=0.4, new-category:occupation=0.03, label:0.1, score:0.5, bias:sex=Female:0.5)"
)
FEEDBACK = "feedback_label"  # the column of a draw that holds the label feedback sends


@dataclass(frozen=True)
class Scenario:
    """One way production differs from the held-back rows (parse builds it from its text form)."""

    kind: str  # "none" | "shift" | "new-category" | "label" | "score" | "bias"
    column: str | None  # shift / new-category: the field; bias: the protected attribute
    # shift: sd of the column's mean shift; new-category: share of rows; label: change of the positive
    # rate; score: sd of the score's mean shift; bias: share of the group's negatives given the positive label
    amount: float
    group: str | None = None  # bias: the group of the attribute

    def __str__(self) -> str:
        """The text form, as parse reads it."""
        amount = f"{self.amount:g}"
        if self.kind == "none":
            return "none"
        if self.kind in ("label", "score"):
            return f"{self.kind}:{amount}"
        if self.kind == "bias":
            return f"bias:{self.column}={self.group}:{amount}"
        return f"{self.kind}:{self.column}={amount}"


def request_fields(schema: DatasetSchema) -> tuple[Column, ...]:
    """The columns a request carries: model inputs, then protected attributes that are not inputs.

    The same as gitml.serve.requests.request_columns, without importing the server (pydantic).
    """
    inputs = schema.feature_columns
    return (*inputs, *(c for c in schema.protected_columns if c not in inputs))


def _fail(text: str, problem: str) -> GitmlError:
    return GitmlError(f"scenario '{text}': {problem}. The scenarios: {FORMS}.")


def _number(text: str, value: str, what: str, low: float | None = None, high: float | None = None) -> float:
    try:
        number = float(value)
    except ValueError:
        raise _fail(text, f"'{value}' is not a number; {what}") from None
    if not math.isfinite(number):
        raise _fail(text, f"{what} must be a finite number, not {value}")
    if (low is not None and number < low) or (high is not None and number > high):
        raise _fail(text, f"{what} must be between {low:g} and {high:g}, not {value}")
    return number


def _field(text: str, name: str, schema: DatasetSchema, kind: str) -> Column:
    """The request field a shift or new-category scenario names, of the dtype the kind needs."""
    fields = request_fields(schema)
    names = [c.name for c in fields]
    if not name:
        raise _fail(text, f"{kind} needs a field name before '='")
    if name not in names:
        if name == schema.label.name:
            raise _fail(text, f"'{name}' is the label; a change of the positive rate is label:CHANGE")
        if name in schema.names:
            raise _fail(text, f"'{name}' is not a field of a request (the fields: {', '.join(names)})")
        raise _fail(text, f"no field '{name}'{suggest(name, names)}; the fields: {', '.join(names)}")
    column = schema.column(name)
    numeric = column.output_dtype in ("integer", "float")
    if kind == "shift" and not numeric:
        choices = ", ".join(c.name for c in fields if c.output_dtype in ("integer", "float")) or "none"
        raise _fail(
            text,
            f"'{name}' is {column.output_dtype}: shift moves the mean of a numeric field ({choices}); "
            f"for a category never seen before, new-category:{name}=SHARE",
        )
    if kind == "new-category" and column.output_dtype != "categorical":
        choices = ", ".join(c.name for c in fields if c.output_dtype == "categorical") or "none"
        hint = f"; to move a number, shift:{name}=SD" if numeric else ""
        problem = f"'{name}' is {column.output_dtype}: new-category is for a categorical field ({choices}){hint}"
        raise _fail(text, problem)
    return column


def groups_of(column: Column) -> tuple[str, ...]:
    """The groups a protected attribute's values fall into (bands of a number, or its categories)."""
    if column.band_labels is not None:
        return column.band_labels
    return column.output_categories or ()


def parse(text: str, schema: DatasetSchema) -> Scenario:
    """The scenario `text` names, checked against the dataset schema; GitmlError naming the mistake."""
    spec = text.strip()
    kind, colon, rest = spec.partition(":")
    if kind not in KINDS:
        raise _fail(text, f"'{kind}' is not a scenario{suggest(kind, KINDS)}")
    if kind == "none":
        if colon:
            raise _fail(text, "'none' takes no argument")
        return Scenario("none", None, 0.0)
    if kind in ("label", "score"):
        if not rest:
            raise _fail(text, f"{kind} needs an amount: {'label:CHANGE' if kind == 'label' else 'score:SD'}")
        if kind == "label":
            return Scenario("label", None, _number(text, rest, "the change of the positive rate", -1.0, 1.0))
        return Scenario("score", None, _number(text, rest, "the score's shift in standard deviations"))
    if kind in ("shift", "new-category"):
        name, equals, value = rest.rpartition("=")
        if not equals:
            form = "shift:COLUMN=SD" if kind == "shift" else "new-category:COLUMN=SHARE"
            raise _fail(text, f"{kind} needs a field and an amount: {form}")
        column = _field(text, name, schema, kind)
        if kind == "shift":
            return Scenario("shift", column.name, _number(text, value, "the shift in standard deviations"))
        return Scenario("new-category", column.name, _number(text, value, "the share of rows", 0.0, 1.0))
    # bias:ATTRIBUTE=GROUP:SHARE
    name, equals, tail = rest.partition("=")
    group, colon, value = tail.rpartition(":")
    if not equals or not colon or not group:
        raise _fail(text, "bias needs a protected attribute, one of its groups and a share: bias:ATTRIBUTE=GROUP:SHARE")
    protected = [c.name for c in schema.protected_columns]
    if name not in protected:
        hint = suggest(name, protected) if name not in schema.names else ""
        known = ", ".join(protected)
        raise _fail(text, f"'{name}' is not a protected attribute{hint}; the protected attributes: {known}")
    groups = groups_of(schema.column(name))
    if group not in groups:
        hint = suggest(group, groups)
        raise _fail(text, f"'{group}' is not a group of {name}{hint}; its groups: {', '.join(groups)}")
    share = _number(text, value, "the share of the group's negatives", 0.0, 1.0)
    return Scenario("bias", name, share, group)


def new_category(column: Column) -> str:
    """A category the column does not have: '<column>-new' (or -new-2, ... if that one is declared)."""
    taken = set(column.categories or ()) | set(column.output_categories or ())
    name, n = f"{column.name}-new", 1
    while name in taken:
        n += 1
        name = f"{column.name}-new-{n}"
    return name


def tilt(values: npt.NDArray[np.float64], amount: float, what: str) -> npt.NDArray[np.float64]:
    """Probabilities ∝ exp(λ·z), z the values standardised, under which z's mean is `amount`.

    The weighted mean of z is increasing in λ (its derivative is the weighted variance), so a
    bracketed Newton search finds λ in a few passes over the values.
    """
    size = len(values)
    sd = float(values.std())
    if size == 0 or not sd > 0:
        raise GitmlError(f"{what} has a single value in these rows: there is no mean to shift.")
    z = (values - values.mean()) / sd
    if amount == 0:
        return np.full(size, 1.0 / size)
    if amount < 0:
        z, amount = -z, -amount
    top = float(z.max())
    if amount >= top:
        raise GitmlError(
            f"cannot shift {what} by {amount:g} standard deviations: its largest value in these rows is {top:.2f} "
            f"sd from its mean, so resampling them moves the mean less than that. Ask for a smaller shift."
        )

    def moments(lam: float) -> tuple[float, float, npt.NDArray[np.float64]]:
        exponent = lam * z
        weights = np.exp(exponent - exponent.max())
        weights /= weights.sum()
        mean = float(weights @ z)
        return mean, max(float(weights @ (z * z)) - mean * mean, 0.0), weights

    low, high = 0.0, 1.0
    while moments(high)[0] < amount:  # the mean reaches `amount` below λ = high
        low, high = high, high * 2
    lam = min(max(amount, low), high)
    for _ in range(100):
        mean, variance, weights = moments(lam)
        if abs(mean - amount) < 1e-9:
            break
        if mean < amount:
            low = lam
        else:
            high = lam
        step = lam + (amount - mean) / variance if variance > 0 else math.nan
        lam = step if low < step < high else (low + high) / 2
    return weights


def _numbers(series: pd.Series) -> npt.NDArray[np.float64]:  # type: ignore[type-arg]
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def weights(
    rows: pd.DataFrame, scenario: Scenario, schema: DatasetSchema, scores: npt.ArrayLike | None = None
) -> npt.NDArray[np.float64] | None:
    """Each row's probability of being drawn under the scenario; None for uniform."""
    size = len(rows)
    if scenario.kind == "shift":
        assert scenario.column is not None
        values = _numbers(rows[scenario.column])
        present = ~np.isnan(values)
        if not present.any():
            raise GitmlError(f"{scenario.column} is missing in every row: there is no mean to shift.")
        probabilities = np.full(size, 1.0 / size)  # missing values keep their share
        probabilities[present] = present.mean() * tilt(values[present], scenario.amount, scenario.column)
        return probabilities
    if scenario.kind == "score":
        if scores is None:
            raise GitmlError("the scenario score:SD needs the model's scores of the rows (the bundle in models/).")
        score = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(score) != size or np.isnan(score).any():
            raise GitmlError(f"{len(score)} scores for {size} rows: the scenario score:SD needs one score per row.")
        return tilt(score, scenario.amount, "the model's score")
    if scenario.kind == "label":
        positive = rows[schema.label.name].to_numpy(dtype=object) == schema.positive_class
        count = int(positive.sum())
        rate = count / size
        target = rate + scenario.amount
        if not 0 <= target <= 1 or (target > 0 and count == 0) or (target < 1 and count == size):
            raise GitmlError(
                f"the rows' positive rate ({schema.positive_class}) is {rate:.1%}: a change of {scenario.amount:+g} "
                f"would make it {target:.1%}, which resampling these rows cannot reach."
            )
        per_positive = target / count if count else 0.0
        per_negative = (1 - target) / (size - count) if count < size else 0.0
        return np.where(positive, per_positive, per_negative)
    return None


def draw(
    rows: pd.DataFrame,
    n: int,
    scenario: Scenario,
    schema: DatasetSchema,
    rng: np.random.Generator,
    scores: npt.ArrayLike | None = None,
) -> pd.DataFrame:
    """n rows drawn with replacement from `rows` under the scenario, with their `feedback_label`.

    `rows` are processed rows with the label column (e.g. data/processed/test.parquet); `scores`,
    aligned with them, are the model's scores, which only the score scenario needs.
    """
    label = schema.label.name
    needed = [name for name in (label, scenario.column) if name is not None and name not in rows.columns]
    if needed:
        raise GitmlError(
            f"the rows to draw from lack the columns {', '.join(needed)}; "
            f"they have {', '.join(map(str, rows.columns)) or 'none'}."
        )
    if rows.empty:
        raise GitmlError("there are no rows to draw from.")
    if n < 0:
        raise GitmlError(f"cannot draw {n} rows.")
    size = len(rows)
    probabilities = weights(rows, scenario, schema, scores)
    if probabilities is None:
        index = rng.integers(0, size, n)
    else:
        # Inverse-CDF sampling of sorted uniforms (a cache-friendly search: twice as fast as unsorted
        # ones), then shuffled: a uniform permutation of i.i.d. draws is an i.i.d. sequence again.
        cumulative = np.cumsum(probabilities)
        found = np.searchsorted(cumulative, np.sort(rng.random(n)) * cumulative[-1], side="right")
        index = rng.permutation(np.minimum(found, size - 1))
    out = rows.take(index).reset_index(drop=True)
    feedback = out[label].to_numpy(dtype=object, copy=True)
    if scenario.kind == "new-category":
        assert scenario.column is not None
        _new_category(out, scenario.column, schema.column(scenario.column), scenario.amount, rng)
    elif scenario.kind == "bias":
        assert scenario.column is not None
        if scores is None:
            raise GitmlError("the scenario bias:ATTRIBUTE=GROUP:SHARE needs the model's scores of the rows.")
        given = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(given) != size:
            raise GitmlError(f"{len(given)} scores for {size} rows: the scenario bias needs one score per row.")
        drawn_scores = given[index]
        groups = schema.protected_groups(scenario.column, out[scenario.column].to_numpy())
        eligible = np.flatnonzero((groups == scenario.group) & (feedback != schema.positive_class))
        lowest = eligible[np.argsort(drawn_scores[eligible], kind="stable")]
        feedback[lowest[: round(scenario.amount * len(eligible))]] = schema.positive_class
    out[FEEDBACK] = feedback
    return out


def _new_category(out: pd.DataFrame, name: str, column: Column, share: float, rng: np.random.Generator) -> None:
    """Give `share` of the rows of `out` a category the column does not have, in place."""
    where = rng.choice(len(out), size=round(share * len(out)), replace=False)
    new = new_category(column)
    series = out[name]
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.cat.add_categories([new])
        series.iloc[where] = new
        out[name] = series
    else:
        values = series.to_numpy(dtype=object, copy=True)
        values[where] = new
        out[name] = values
