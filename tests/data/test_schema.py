"""The dataset schema: the bundled Adult config, and config mistakes named with their place."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from gitml.data.schema import DatasetSchema, band_labels
from gitml.errors import GitmlError
from tests.conftest import TOY_CONFIG, toy_config


@pytest.fixture(scope="module")
def adult(repo: Path) -> DatasetSchema:
    cfg = yaml.safe_load((repo / "conf" / "data" / "adult.yaml").read_text())
    return DatasetSchema.from_config(cfg, source="conf/data/adult.yaml")


def test_adult_schema_roles_and_policies(adult: DatasetSchema) -> None:
    assert len(adult.columns) == 15
    assert adult.label.name == "income"
    assert adult.positive_class == ">50K"
    assert [c.name for c in adult.protected_columns] == ["age", "race", "sex"]
    assert "fnlwgt" not in [c.name for c in adult.kept_columns]
    features = [c.name for c in adult.feature_columns]
    assert "income" not in features
    assert {"age", "sex", "race", "native-country"} <= set(features)
    country = adult.column("native-country")
    assert country.output_categories is not None
    assert "Europe" in country.output_categories
    assert country.generalization is not None
    assert country.generalization.groups is not None
    assert set(country.generalization.groups) == set(country.categories or ())


def test_age_bands_for_fairness_reports(adult: DatasetSchema) -> None:
    groups = adult.protected_groups("age", [17, 24, 25, 44, 45, 64, 65, 90, float("nan")])
    assert groups.tolist() == ["<25", "<25", "25-44", "25-44", "45-64", "45-64", "65+", "65+", None]
    assert adult.protected_groups("sex", ["Male"]).tolist() == ["Male"]


def test_band_labels_for_floats() -> None:
    assert band_labels([0.5, 1.5], integer=False) == ("<0.5", "[0.5, 1.5)", "1.5+")


def _with_column(column: str, **changes: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(TOY_CONFIG)
    cfg["columns"][column].update(changes)
    return cfg


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (_with_column("age", role="featur"), r"column 'age': role 'featur' is not one of .*did you mean 'feature'"),
        (_with_column("age", pii="pseudonymise"), r"pii 'pseudonymise' is not one of .*did you mean 'pseudonymize'"),
        (_with_column("age", dtype="int"), r"column 'age': dtype 'int' is not one of integer, float"),
        (_with_column("age", nulable=True), r"column 'age': unknown key 'nulable' \(did you mean 'nullable'\?\)"),
        (_with_column("age", min=200), r"min 200 is greater than max 100"),
        (_with_column("segment", categories=["a", "a"]), r"categories lists a more than once"),
        (_with_column("segment", min=3), r"min/max are for numeric columns"),
        (_with_column("churned", positive="maybe"), r"positive class 'maybe' is not one of its categories"),
        (
            _with_column("segment", role="label", positive="retail"),
            r"exactly one column must have role 'label', found 2",
        ),
        (_with_column("customer_id", pii="keep"), r"an identifier must not be kept"),
        (_with_column("age", pii="drop"), r"a protected attribute is needed for fairness checks"),
        (_with_column("age", bands=[50, 30]), r"bands must be strictly increasing"),
        (_with_column("balance", generalize={"bins": "wide"}), r"bins must be a non-empty list of numbers"),
        (_with_column("balance", generalize={"groups": {}}), r"numeric column is generalized with 'bins'"),
        (
            _with_column("city", generalize={"groups": {"Germany": ["Berlin"]}}),
            r"Hamburg, Munich, Lyon, Paris, Nice belong to no group",
        ),
        (
            _with_column("city", generalize={"groups": {"G": ["Berlim"]}}),
            r"'Berlim', which is not a category of 'city' \(did you mean 'Berlin'\?\)",
        ),
        (
            _with_column("city", generalize={"groups": {"A": ["Lyon"], "B": ["Lyon"]}}),
            r"'Lyon' is in both group 'A' and group 'B'",
        ),
        (_with_column("segment", generalize={"groups": {}}), r"a 'generalize' block needs pii: generalize"),
        (_with_column("segment", feature=False), r"'feature' .* only for role: protected"),
        (_with_column("churned", categories=[False, True]), r"categories has true/false .* Quote them"),
        (toy_config(colums={}), r"dataset: unknown key 'colums' \(did you mean 'columns'\?\)"),
        (toy_config(raw={"files": []}), r"files must be a non-empty list"),
        (toy_config(raw={"files": ["a.csv"], "delimiter": ", "}), r"delimiter must be one character"),
        (toy_config(quality={"duplicates": "drop"}), r"duplicates 'drop' is not one of quarantine, keep"),
        (toy_config(quality={"max_quarantined_fraction": 5}), r"between 0 and 1"),
        (toy_config(columns=[]), r"columns must be a non-empty mapping"),
    ],
)
def test_config_mistakes_are_named(cfg: dict[str, Any], message: str) -> None:
    with pytest.raises(GitmlError, match=message) as caught:
        DatasetSchema.from_config(cfg, source="conf/data/toy.yaml")
    assert str(caught.value).startswith("conf/data/toy.yaml: ")


def test_schema_module_needs_no_pandas() -> None:
    """The server validates requests with the schema, and the server has no pandas."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['pandas'] = None\n"
        "import gitml.data.schema, gitml.data.anonymize, gitml.data.pii\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "ok", result.stderr


def test_assign_bands_handles_arrays() -> None:
    schema = DatasetSchema.from_config(toy_config())
    out = schema.protected_groups("age", np.array([18, 30, 49, 50]))
    assert out.tolist() == ["<30", "30-49", "30-49", "50+"]


def test_anonymize_values_per_policy() -> None:
    from gitml.data.anonymize import anonymize_values

    schema = DatasetSchema.from_config(toy_config())
    assert anonymize_values(schema.column("age"), [20, 40], None).tolist() == [20, 40]
    city = anonymize_values(schema.column("city"), np.array(["Lyon", None, "Berlin"], dtype=object), None)
    assert city.tolist() == ["France", None, "Germany"]
    assert anonymize_values(schema.column("balance"), [10.0, 9000.0, float("nan")], None)[:2].tolist() == [10.0, 5000.0]
    ids = anonymize_values(schema.column("customer_id"), np.array(["C1", None], dtype=object), b"k" * 16)
    assert ids[1] is None
    assert len(ids[0]) == 32
    with pytest.raises(ValueError, match="needs a key"):
        anonymize_values(schema.column("customer_id"), ["C1"], None)
