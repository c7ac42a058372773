"""draft-schema: a config drafted from a file is accepted as it is, and ingests that file whole."""

from __future__ import annotations

import gzip
import random
import shutil
from pathlib import Path

import pytest
import yaml

from gitml.cli import main
from gitml.config import compose_params, load_params
from gitml.data.draft import draft_schema
from gitml.data.schema import DatasetSchema
from gitml.errors import GitmlError
from gitml.paths import Paths
from gitml.stages import ingest
from tests.conftest import TOY_COLUMNS, toy_rows, write_csv

KEY = {"GITML_PSEUDONYM_KEY": "a-key-for-drafted-schemas"}


def customers(root: Path) -> Path:
    rows = [[*r, f"user{i}@mail.example.com" if i % 3 == 0 else ""] for i, r in enumerate(toy_rows(300))]
    return write_csv(root / "data" / "raw" / "customers.csv", rows, header=[*TOY_COLUMNS, "email"])


def test_draft_of_a_file_with_a_header(tmp_path: Path) -> None:
    path = customers(tmp_path)
    cfg = yaml.safe_load(draft_schema(path, tmp_path, "customers", "churned"))
    schema = DatasetSchema.from_config(cfg)
    roles = {c.name: (c.role, c.pii) for c in schema.columns}
    assert roles == {
        "customer_id": ("identifier", "pseudonymize"),
        "age": ("protected", "keep"),
        "city": ("feature", "keep"),
        "balance": ("feature", "keep"),
        "segment": ("feature", "keep"),
        "churned": ("label", "keep"),
        "email": ("feature", "drop"),
    }
    assert schema.column("age").bands == (25, 45, 65)
    assert schema.column("city").categories == ("Berlin", "Hamburg", "Lyon", "Munich", "Nice", "Paris")
    assert schema.column("city").nullable
    assert schema.column("balance").dtype == "float"
    assert schema.positive_class == "yes"  # the rarer class
    assert cfg["raw"] == {
        "files": [
            {"path": "data/raw/customers.csv"},
            # where `gitml collect` writes labelled production records, so retraining reads them
            {"path": "data/raw/production/*.csv", "header": True, "delimiter": ",", "generalised": True},
        ],
        "delimiter": ",",
        "header": True,
        "missing_values": ["?"],
    }
    result = ingest.run({"data": cfg}, Paths(tmp_path), KEY)
    assert (result.rows_read, result.rows_clean) == (300, 300)


def test_draft_of_a_compressed_file_without_header_and_a_numeric_label(tmp_path: Path) -> None:
    rows = [[str(i % 7), f"{i * 0.5:.1f}", "no" if i % 2 else "yes", "1" if i % 4 == 0 else "0"] for i in range(400)]
    plain = write_csv(tmp_path / "plain.csv", rows, header=None, delimiter=";")
    (tmp_path / "data").mkdir()
    with gzip.open(tmp_path / "data" / "readings.csv.gz", "wb") as fh:
        fh.write(plain.read_bytes())
    cfg = yaml.safe_load(draft_schema(tmp_path / "data" / "readings.csv.gz", tmp_path, "readings", "column_4"))
    assert cfg["raw"]["header"] is False
    assert cfg["raw"]["delimiter"] == ";"
    schema = DatasetSchema.from_config(cfg)
    assert schema.column("column_3").categories == ("no", "yes")  # not booleans
    assert schema.label.categories == ("0", "1")
    assert schema.positive_class == "1"
    assert ingest.run({"data": cfg}, Paths(tmp_path), KEY).rows_clean == 400


def test_a_draft_composes_through_hydra(repo: Path, tmp_path: Path) -> None:
    """From the draft in conf/data/ to params.yaml, as a user would select it, nothing is misread."""
    customers(tmp_path)
    conf = tmp_path / "conf"
    shutil.copytree(repo / "conf", conf)
    out = conf / "data" / "customers.yaml"
    assert (
        main(
            [
                "--root",
                str(tmp_path),
                "draft-schema",
                str(tmp_path / "data/raw/customers.csv"),
                "--label",
                "churned",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    compose_params(conf, tmp_path / "params.yaml", ["data=customers"])
    params = load_params(tmp_path / "params.yaml")
    assert params["data"]["columns"]["churned"]["categories"] == ["no", "yes"]
    assert ingest.run(params, Paths(tmp_path), KEY).rows_quarantined == 0


def test_out_is_not_overwritten_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = customers(tmp_path)
    out = tmp_path / "mine.yaml"
    out.write_text("keep me\n")
    args = ["--root", str(tmp_path), "draft-schema", str(path), "--label", "churned", "--out", str(out)]
    assert main(args) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_text() == "keep me\n"
    assert main([*args, "--force"]) == 0
    assert out.read_text().startswith("# Drafted by `gitml draft-schema`")


@pytest.mark.parametrize(
    ("label", "positive", "message"),
    [
        ("churn", None, r"--label 'churn' is not a column .* churned"),
        ("segment", "vip", r"choose the positive class of 'segment' with --positive, one of: business, retail"),
        ("city", None, r"the label 'city' is missing in some rows"),
    ],
)
def test_draft_mistakes(tmp_path: Path, label: str, positive: str | None, message: str) -> None:
    with pytest.raises(GitmlError, match=message):
        draft_schema(customers(tmp_path), tmp_path, "customers", label, positive)


def test_draft_of_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("\n")
    with pytest.raises(GitmlError, match="the file is empty"):
        draft_schema(tmp_path / "empty.csv", tmp_path, "empty", "x")
    with pytest.raises(GitmlError, match="not found"):
        draft_schema(tmp_path / "missing.csv", tmp_path, "missing", "x")


def test_protected_attributes_are_found_by_any_word_of_their_name_and_by_their_values(tmp_path: Path) -> None:
    rng = random.Random(5)
    header = ["applicantAge", "Skin-Colour", "g", "marital_status_code", "mortgage_usage", "page_views", "label"]
    rows = [
        [
            str(rng.randint(18, 60)),
            rng.choice(["a", "b", "c"]),
            rng.choice(["Male", "Female"]),
            rng.choice(["1", "2"]),
            str(rng.randint(0, 9)),
            str(rng.randint(0, 99)),
            rng.choice(["y", "n", "n"]),
        ]
        for _ in range(200)
    ]
    path = write_csv(tmp_path / "data" / "raw" / "people.csv", rows, header=header)
    cfg = yaml.safe_load(draft_schema(path, tmp_path, "people", "label"))
    roles = {name: spec["role"] for name, spec in cfg["columns"].items()}
    assert roles == {
        "applicantAge": "protected",  # the word age, in camel case
        "Skin-Colour": "protected",
        "g": "protected",  # no telling name: its values are a sex
        "marital_status_code": "protected",
        "mortgage_usage": "feature",  # "age" inside a word is no age
        "page_views": "feature",
        "label": "label",
    }
    # Age bands inside the range the file holds (18-60): no 65+ band of nobody.
    assert cfg["columns"]["applicantAge"]["bands"] == [25, 45]
    text = draft_schema(path, tmp_path, "people", "label")
    assert "a protected attribute (its values are sex)" in text
    assert "a protected attribute (its name says colour)" in text


def test_the_drafted_production_entry_is_where_collect_writes() -> None:
    from gitml.data.draft import COLLECTED
    from gitml.monitor.collect import OUT

    assert f"{OUT.as_posix()}/*.csv" == COLLECTED
