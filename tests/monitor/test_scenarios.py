"""Drift scenarios on a synthetic dataset of our own schema: each moves what it says by its amount,
"none" moves nothing, and a mistyped scenario is refused with a message that says what was meant."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from gitml.data.schema import DatasetSchema
from gitml.errors import GitmlError
from gitml.monitor.scenarios import FEEDBACK, FORMS, Scenario, draw, new_category, parse, weights

CONFIG: dict[str, Any] = {
    "name": "shop",
    "raw": {"files": [{"path": "raw/shop.csv"}]},
    "columns": {
        "customer": {"dtype": "string", "role": "identifier", "pii": "pseudonymize"},
        "age": {"dtype": "integer", "min": 18, "max": 90, "role": "protected", "bands": [30, 50]},
        "gender": {"dtype": "categorical", "categories": ["f", "m", "x"], "role": "protected", "feature": False},
        "spend": {"dtype": "float", "min": 0, "role": "feature"},
        "visits": {"dtype": "integer", "min": 0, "max": 99, "nullable": True, "role": "feature"},
        "plan": {"dtype": "categorical", "categories": ["basic", "plus", "pro"], "role": "feature"},
        "bought": {"dtype": "categorical", "categories": ["no", "yes"], "role": "label", "positive": "yes"},
    },
}
SCHEMA = DatasetSchema.from_config(CONFIG, source="shop config")
N = 20_000


def make_rows(n: int = N, seed: int = 0) -> pd.DataFrame:
    """Processed rows as the split stage writes them: categories as pandas categoricals, and an
    index that is not 0..n-1 (draws are positional). Spend grows with age; buying with spend."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 91, n)
    spend = np.exp(3 + 0.02 * age + rng.normal(0, 0.5, n))
    visits = np.clip(rng.normal(10, 4, n).round(), 0, 99)
    visits[rng.random(n) < 0.1] = np.nan
    plan = rng.choice(["basic", "plus", "pro"], n, p=[0.6, 0.3, 0.1])
    gender = rng.choice(["f", "m", "x"], n, p=[0.48, 0.48, 0.04])
    logit = -3 + 0.01 * spend + (plan == "pro") * 1.0
    bought = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    frame = pd.DataFrame(
        {
            "customer": [f"h{i:06x}" for i in range(n)],
            "age": age,
            "gender": pd.Categorical(gender, categories=["f", "m", "x"]),
            "spend": spend,
            "visits": visits,
            "plan": pd.Categorical(plan, categories=["basic", "plus", "pro"]),
            "bought": pd.Categorical(bought, categories=["no", "yes"]),
        }
    )
    frame.index = pd.Index(np.arange(n) * 3 + 1000)
    return frame


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return make_rows()


def standardised_shift(drawn: pd.Series, rows: pd.Series) -> float:  # type: ignore[type-arg]
    return float((drawn.mean() - rows.mean()) / rows.std(ddof=0))


def test_none_keeps_every_column_as_it_is(rows: pd.DataFrame) -> None:
    drawn = draw(rows, 2 * N, parse("none", SCHEMA), SCHEMA, np.random.default_rng(1))
    assert list(drawn.columns) == [*rows.columns, FEEDBACK]
    assert len(drawn) == 2 * N  # more than there are rows: drawn with replacement
    assert (drawn.dtypes.drop(FEEDBACK) == rows.dtypes).all()
    assert set(drawn["customer"]) <= set(rows["customer"])
    for name in ("age", "spend", "visits"):
        assert abs(standardised_shift(drawn[name], rows[name])) < 0.03, name
    assert abs(drawn["visits"].isna().mean() - rows["visits"].isna().mean()) < 0.01
    for name in ("gender", "plan", "bought"):
        shares = drawn[name].value_counts(normalize=True)
        expected = rows[name].value_counts(normalize=True)
        assert (shares - expected).abs().max() < 0.015, name
    assert (drawn[FEEDBACK] == drawn["bought"].astype(object)).all()


def test_a_draw_is_reproducible_from_its_seed(rows: pd.DataFrame) -> None:
    scenario = parse("shift:spend=0.3", SCHEMA)
    first = draw(rows, 500, scenario, SCHEMA, np.random.default_rng(7))
    again = draw(rows, 500, scenario, SCHEMA, np.random.default_rng(7))
    other = draw(rows, 500, scenario, SCHEMA, np.random.default_rng(8))
    pd.testing.assert_frame_equal(first, again)
    assert not first["customer"].equals(other["customer"])


@pytest.mark.parametrize(("column", "amount"), [("spend", 0.4), ("age", -0.3), ("visits", 0.8), ("age", 1.2)])
def test_a_shift_resamples_real_rows_to_move_the_mean_by_its_amount(
    rows: pd.DataFrame, column: str, amount: float
) -> None:
    scenario = parse(f"shift:{column}={amount}", SCHEMA)
    expected = weights(rows, scenario, SCHEMA)
    assert expected is not None
    values = rows[column].to_numpy(dtype=float)
    present = ~np.isnan(values)
    mean = np.sum(expected[present] * values[present]) / expected[present].sum()
    sd = values[present].std()
    assert mean == pytest.approx(values[present].mean() + amount * sd, abs=1e-6 * sd)  # exact in expectation
    assert expected[~present].sum() == pytest.approx((~present).mean())  # missing values keep their share

    drawn = draw(rows, 4 * N, scenario, SCHEMA, np.random.default_rng(2))
    assert standardised_shift(drawn[column], rows[column]) == pytest.approx(amount, abs=0.03)
    assert set(drawn["customer"]) <= set(rows["customer"])  # whole real rows, nothing made up
    joined = drawn.merge(rows, on="customer", suffixes=("", "_row"))
    assert (joined["spend"] == joined["spend_row"]).all()
    if column == "age":  # spend grows with age: the rows bring it along
        assert np.sign(standardised_shift(drawn["spend"], rows["spend"])) == np.sign(amount)


def test_a_shift_the_rows_cannot_reach_is_refused(rows: pd.DataFrame) -> None:
    with pytest.raises(GitmlError, match=r"cannot shift age by 3 standard deviations: its largest value .* is 1\.7"):
        draw(rows, 10, parse("shift:age=-3", SCHEMA), SCHEMA, np.random.default_rng(0))
    constant = rows.assign(visits=5.0)
    with pytest.raises(GitmlError, match="visits has a single value"):
        draw(constant, 10, parse("shift:visits=0.1", SCHEMA), SCHEMA, np.random.default_rng(0))


def test_a_new_category_replaces_its_share_of_the_rows(rows: pd.DataFrame) -> None:
    scenario = parse("new-category:plan=0.03", SCHEMA)
    drawn = draw(rows, 10_000, scenario, SCHEMA, np.random.default_rng(3))
    new = new_category(SCHEMA.column("plan"))
    assert new == "plan-new"
    assert (drawn["plan"] == new).sum() == 300
    assert set(drawn["plan"].astype(object)) == {"basic", "plus", "pro", new}
    assert isinstance(drawn["plan"].dtype, pd.CategoricalDtype)
    unchanged = drawn["plan"] != new
    assert (
        drawn.loc[unchanged, "plan"].astype(str)
        == drawn.loc[unchanged, "customer"].map(rows.set_index("customer")["plan"].astype(str))
    ).all()

    objects = rows.assign(plan=rows["plan"].astype(object))  # a table read from CSV
    drawn = draw(objects, 1000, parse("new-category:plan=0.5", SCHEMA), SCHEMA, np.random.default_rng(3))
    assert (drawn["plan"] == new).sum() == 500


def test_a_new_category_is_one_the_column_does_not_have() -> None:
    config = {**CONFIG, "columns": {**CONFIG["columns"]}}
    config["columns"]["plan"] = {**CONFIG["columns"]["plan"], "categories": ["basic", "plan-new", "plan-new-2"]}
    assert new_category(DatasetSchema.from_config(config).column("plan")) == "plan-new-3"


@pytest.mark.parametrize("change", [0.1, -0.1, 0.25])
def test_a_label_shift_moves_the_positive_rate(rows: pd.DataFrame, change: float) -> None:
    before = (rows["bought"] == "yes").mean()
    drawn = draw(rows, 4 * N, parse(f"label:{change:+g}", SCHEMA), SCHEMA, np.random.default_rng(4))
    assert (drawn["bought"] == "yes").mean() == pytest.approx(before + change, abs=0.01)
    assert (drawn[FEEDBACK] == drawn["bought"].astype(object)).all()
    assert drawn["spend"].mean() > rows["spend"].mean() if change > 0 else drawn["spend"].mean() < rows["spend"].mean()


def test_a_label_shift_past_what_the_rows_have_is_refused(rows: pd.DataFrame) -> None:
    with pytest.raises(GitmlError, match=r"positive rate \(yes\) is .*%: a change of \+0.9 would make it 1\d\d"):
        draw(rows, 10, parse("label:0.9", SCHEMA), SCHEMA, np.random.default_rng(0))
    negatives = rows[rows["bought"] == "no"]
    with pytest.raises(GitmlError, match="cannot reach"):
        draw(negatives, 10, parse("label:0.1", SCHEMA), SCHEMA, np.random.default_rng(0))


def test_a_score_shift_moves_the_models_mean_score(rows: pd.DataFrame) -> None:
    scores = 1 / (1 + np.exp(-(-3 + 0.01 * rows["spend"].to_numpy())))
    scored = rows.assign(score=scores)  # carried along, to read the drawn rows' scores
    drawn = draw(scored, 4 * N, parse("score:0.5", SCHEMA), SCHEMA, np.random.default_rng(5), scores)
    assert standardised_shift(drawn["score"], scored["score"]) == pytest.approx(0.5, abs=0.03)

    with pytest.raises(GitmlError, match="score:SD needs the model's scores"):
        draw(rows, 10, parse("score:0.5", SCHEMA), SCHEMA, np.random.default_rng(0))
    with pytest.raises(GitmlError, match=f"3 scores for {N} rows"):
        draw(rows, 10, parse("score:0.5", SCHEMA), SCHEMA, np.random.default_rng(0), scores[:3])


def test_bias_gives_the_groups_lowest_scored_negatives_the_positive_label(rows: pd.DataFrame) -> None:
    scores = np.random.default_rng(5).random(len(rows))
    scored = rows.assign(model_score=scores)  # carried along, so each drawn row's score is known
    drawn = draw(scored, 2 * N, parse("bias:gender=f:0.5", SCHEMA), SCHEMA, np.random.default_rng(6), scores)
    group_negatives = (drawn["gender"] == "f") & (drawn["bought"] == "no")
    flipped = drawn[FEEDBACK] != drawn["bought"].astype(object)
    assert (drawn.loc[flipped, FEEDBACK] == "yes").all()
    assert not (flipped & ~group_negatives).any()
    assert flipped.sum() == round(0.5 * group_negatives.sum())
    # the new positives are the group's negatives the model scores lowest: its live TPR falls
    assert drawn.loc[flipped, "model_score"].max() <= drawn.loc[group_negatives & ~flipped, "model_score"].min()
    assert abs(standardised_shift(drawn["spend"], rows["spend"])) < 0.03
    with pytest.raises(GitmlError, match="needs the model's scores"):
        draw(rows, 10, parse("bias:gender=f:0.5", SCHEMA), SCHEMA, np.random.default_rng(0))

    banded = draw(rows, N, parse("bias:age=30-49:1", SCHEMA), SCHEMA, np.random.default_rng(6), scores)
    in_band = banded["age"].between(30, 49)
    negative = banded["bought"] == "no"
    assert (banded.loc[in_band & negative, FEEDBACK] == "yes").all()
    assert (banded.loc[~in_band, FEEDBACK] == banded.loc[~in_band, "bought"].astype(object)).all()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("none", Scenario("none", None, 0.0)),
        (" shift:age=0.4 ", Scenario("shift", "age", 0.4)),
        ("shift:visits=-1", Scenario("shift", "visits", -1.0)),
        ("new-category:plan=0.03", Scenario("new-category", "plan", 0.03)),
        ("new-category:gender=0.1", Scenario("new-category", "gender", 0.1)),  # a protected field is a field
        ("label:+0.1", Scenario("label", None, 0.1)),
        ("label:-0.05", Scenario("label", None, -0.05)),
        ("score:0.5", Scenario("score", None, 0.5)),
        ("bias:gender=f:0.5", Scenario("bias", "gender", 0.5, "f")),
        ("bias:age=50+:1", Scenario("bias", "age", 1.0, "50+")),
    ],
)
def test_parse_reads_every_form(text: str, expected: Scenario) -> None:
    scenario = parse(text, SCHEMA)
    assert scenario == expected
    assert parse(str(scenario), SCHEMA) == scenario


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("shfit:age=0.4", "'shfit' is not a scenario (did you mean 'shift'?)"),
        ("", "'' is not a scenario"),
        ("none:1", "'none' takes no argument"),
        ("shift:age", "shift needs a field and an amount: shift:COLUMN=SD"),
        ("shift:=0.4", "shift needs a field name"),
        ("shift:spedn=0.4", "no field 'spedn' (did you mean 'spend'?)"),
        ("shift:plan=0.4", "'plan' is categorical: shift moves the mean of a numeric field (age, spend, visits)"),
        ("shift:bought=0.1", "'bought' is the label; a change of the positive rate is label:CHANGE"),
        ("shift:customer=0.1", "'customer' is not a field of a request"),
        ("shift:age=big", "'big' is not a number; the shift in standard deviations"),
        ("shift:age=inf", "the shift in standard deviations must be a finite number"),
        (
            "new-category:spend=0.1",
            "'spend' is float: new-category is for a categorical field (plan, gender); "
            "to move a number, shift:spend=SD",
        ),
        ("new-category:plan=1.5", "the share of rows must be between 0 and 1, not 1.5"),
        ("label", "label needs an amount: label:CHANGE"),
        ("label:nan", "must be a finite number"),
        ("label:2", "the change of the positive rate must be between -1 and 1"),
        ("score:", "score needs an amount: score:SD"),
        ("bias:gender=f", "bias needs a protected attribute, one of its groups and a share"),
        (
            "bias:gendr=f:0.5",
            "'gendr' is not a protected attribute (did you mean 'gender'?); the protected attributes: age, gender",
        ),
        ("bias:plan=pro:0.5", "'plan' is not a protected attribute; the protected attributes: age, gender"),
        ("bias:age=30-50:0.5", "'30-50' is not a group of age (did you mean '30-49'?); its groups: <30, 30-49, 50+"),
        ("bias:gender=f:-0.5", "the share of the group's negatives must be between 0 and 1"),
    ],
)
def test_parse_names_the_mistake_and_the_forms(text: str, message: str) -> None:
    with pytest.raises(GitmlError) as caught:
        parse(text, SCHEMA)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"scenario '{text}': ")
    assert str(caught.value).endswith(f"The scenarios: {FORMS}.")


def test_draw_needs_the_columns_and_some_rows(rows: pd.DataFrame) -> None:
    with pytest.raises(GitmlError, match="lack the columns bought, plan"):
        draw(
            rows.drop(columns=["bought", "plan"]),
            10,
            parse("new-category:plan=0.1", SCHEMA),
            SCHEMA,
            np.random.default_rng(0),
        )
    with pytest.raises(GitmlError, match="no rows to draw from"):
        draw(rows.iloc[:0], 10, parse("none", SCHEMA), SCHEMA, np.random.default_rng(0))
    assert draw(rows, 0, parse("shift:age=0.2", SCHEMA), SCHEMA, np.random.default_rng(0)).empty
