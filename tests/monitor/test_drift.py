"""gitml drift on replays of real held-back rows: calibrated detection, live fairness, the command's outputs.

The scratch repository of tests/conftest.py (`trained_sample`) holds the configured dataset's
reference (training rows) and a model trained on a sample. The "production" population is every
clean row that is not in the reference, drawn with gitml.monitor.scenarios: unshifted, or shifted
as `gitml simulate` shifts it. Which columns are numeric, categorical or protected comes from the
schema, never from the bundled dataset's names.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from gitml.cli import main
from gitml.config import load_params
from gitml.monitor import drift, scenarios
from gitml.monitor.drift import DriftConfig, Production
from gitml.paths import Paths
from tests.conftest import Trained, copy_repo

pytestmark = pytest.mark.slow


@dataclasses.dataclass
class World:
    paths: Paths
    params: dict[str, Any]
    bundle: Any
    config: DriftConfig
    reference: drift.Reference
    pool: pd.DataFrame
    pool_scores: npt.NDArray[np.float64]

    @property
    def schema(self) -> Any:
        return self.bundle.schema

    def sample(self, n: int, scenario: str = "none", seed: int = 0) -> pd.DataFrame:
        parsed = scenarios.parse(scenario, self.schema)
        return scenarios.draw(self.pool, n, parsed, self.schema, np.random.default_rng(seed), scores=self.pool_scores)

    def production(self, rows: pd.DataFrame, labels: bool = True) -> Production:
        names = drift.request_names(self.schema)
        scores = drift.score(self.bundle, rows[names])
        return Production(
            rows[names].reset_index(drop=True),
            scores,
            scores >= self.bundle.threshold.value,
            rows[scenarios.FEEDBACK].to_numpy(dtype=object) if labels else None,
            source="replay",
        )

    def check(self, production: Production, **config: Any) -> drift.DriftResult:
        settings = dataclasses.replace(self.config, **config)
        return drift.check(self.paths, self.params, production, self.bundle, settings, ref=self.reference)


@pytest.fixture(scope="module")
def world(trained_sample: Trained, tmp_path_factory: pytest.TempPathFactory) -> World:
    paths = copy_repo(trained_sample[0], tmp_path_factory.mktemp("drift"))
    params = load_params(paths.params)
    bundle = drift.load_bundle(paths)
    reference = drift.reference(paths, bundle)
    clean = pd.read_parquet(paths.clean)
    in_reference = clean.merge(
        pd.read_parquet(paths.split_file("reference")).drop_duplicates(), how="left", indicator=True
    )["_merge"].eq("both")
    pool = clean[~in_reference.to_numpy()].reset_index(drop=True)
    if len(pool) < params["drift"]["min_rows"]:  # a small dataset (tests/conftest.py's unshifted_source)
        pool = pd.read_parquet(paths.split_file("reference"))
    names = drift.request_names(bundle.schema)
    config = DriftConfig.from_config(params["drift"], "params.yaml")
    # Live fairness has its own tests below: the gate's limits judge the model, not the population.
    config = dataclasses.replace(config, fairness_min_labels=10**9)
    return World(paths, params, bundle, config, reference, pool, drift.score(bundle, pool[names]))


def numeric_features(world: World) -> list[str]:
    return [c.name for c in world.schema.feature_columns if c.output_dtype in ("integer", "float")]


@pytest.mark.parametrize("rows", [1000, 5000, 50000])
def test_no_false_alarm_on_the_unshifted_population(world: World, rows: int) -> None:
    # benchmarks/drift_calibration.py runs more seeds and sizes; its figures are in docs/monitoring.md.
    for seed in range(2):
        result = world.check(world.production(world.sample(rows, seed=seed)))
        alarms = [(f.name, f.kind, round(f.severity, 2)) for f in result.findings if f.drifted]
        assert not alarms, f"{rows} rows, seed {seed}: {alarms}"
        # Every test ran, and none came near its limit by chance at this size.
        kinds = {f.kind for f in result.findings}
        assert {"prediction", "multivariate", "label", "performance"} <= kinds
        # (A live score better than the test split's is no step towards an alarm: on a small
        # dataset's reference rows, which the model trained on, it is.)
        near = [
            f.severity
            for f in result.findings
            if f.kind != "fairness" and not (f.kind == "performance" and (f.effect or 0) < 0)
        ]
        assert max(near) < 1.5


@pytest.mark.parametrize(("rows", "amount"), [(1000, 0.5), (5000, 0.3)])
def test_a_mild_shift_of_one_numeric_feature_alarms_and_is_named_first(world: World, rows: int, amount: float) -> None:
    features = numeric_features(world)
    assert features, "the dataset has no numeric feature"
    for name in features:
        result = world.check(world.production(world.sample(rows, f"shift:{name}={amount}", seed=1)))
        assert result.drifted, f"{name} shifted by {amount} sd in {rows} rows: no alarm"
        first = next(f for f in result.findings if f.kind in drift.FEATURE_KINDS)
        assert first.name == name, f"{name} shifted, {first.name} named first"
        assert result.report["top_features"][0] == name
        assert "data" in result.report["drifted"]


def test_a_new_category_in_a_few_percent_of_rows_alarms(world: World) -> None:
    column = next(c.name for c in world.schema.feature_columns if c.output_dtype == "categorical")
    result = world.check(world.production(world.sample(5000, f"new-category:{column}=0.03", seed=2)))
    new = next(f for f in result.findings if f.kind == "new_categories" and f.name == column)
    assert new.drifted
    assert new.effect == pytest.approx(0.03, abs=0.005)
    assert new.detail["categories"][0]["category"] == "(not in the schema)"  # the raw value is never echoed


def test_a_change_of_the_label_rate_alarms(world: World) -> None:
    result = world.check(world.production(world.sample(5000, "label:0.1", seed=3)))
    label = next(f for f in result.findings if f.kind == "label")
    assert label.drifted
    assert label.effect == pytest.approx(0.1, abs=0.03)
    assert "label" in result.report["drifted"]


def test_a_change_of_the_score_distribution_alarms(world: World) -> None:
    result = world.check(world.production(world.sample(5000, "score:0.5", seed=4), labels=False))
    prediction = next(f for f in result.findings if f.kind == "prediction")
    assert prediction.drifted
    assert prediction.effect is not None
    assert prediction.effect >= 0.3


def test_labels_are_optional_and_performance_needs_enough_of_them(world: World) -> None:
    rows = world.sample(2000, seed=5)
    unlabelled = world.check(world.production(rows, labels=False))
    assert not {"label", "performance"} & {f.kind for f in unlabelled.findings}
    assert unlabelled.report["labels"]["labelled"] == 0
    few = world.production(rows)
    assert few.labels is not None
    few.labels[100:] = None
    result = world.check(few)
    assert result.report["labels"]["labelled"] == 100
    assert "fewer than drift.min_labels" in result.report["labels"]["note"]


# --- live fairness -------------------------------------------------------------------------------


def fairness_world(world: World, attribute: str, limit: float) -> World:
    params = {**world.params, "gates": {**world.params["gates"]}}
    params["gates"]["fairness"] = {
        "attributes": {attribute: {"decide_on": "interval", "equal_opportunity_difference": {"max": limit}}}
    }
    config = dataclasses.replace(world.config, fairness_min_labels=1000)
    return dataclasses.replace(world, params=params, config=config)


def missed(production: Production, schema: Any, attribute: str, group: str, share: float, seed: int) -> Production:
    """Feedback saying that `share` of a group's turned-down people were in fact positive: its TPR falls."""
    assert production.labels is not None
    labels = production.labels.copy()
    groups = schema.protected_groups(attribute, production.frame[attribute].to_numpy(dtype=object))
    turned_down = np.flatnonzero((groups == group) & ~production.decisions & (labels != schema.positive_class))
    rng = np.random.default_rng(seed)
    labels[rng.choice(turned_down, round(share * turned_down.size), replace=False)] = schema.positive_class
    return dataclasses.replace(production, labels=labels)


def test_live_fairness_alarms_when_one_groups_tpr_falls_past_the_gates_limit(world: World) -> None:
    attribute = world.schema.protected_columns[0].name
    production = world.production(world.sample(8000, seed=6))
    fair = fairness_world(world, attribute, 1.0).check(production)
    measured = next(f for f in fair.findings if f.kind == "fairness")
    assert measured.effect is not None
    assert measured.detail["interval"] is not None
    # A limit the unbiased labels' whole interval sits under: no alarm.
    limit = round(measured.detail["interval"][1] + 0.05, 3)
    judged = fairness_world(world, attribute, limit)
    unbiased = judged.check(production)
    assert not [f for f in unbiased.findings if f.drifted], unbiased.report["findings"][:3]
    # The compared group whose TPR is lowest already: lowering it further widens the gap.
    groups = fair.report["fairness"]["groups"][attribute]
    compared = [g for g in groups if g in fair.report["fairness"]["summaries"][attribute]["groups_compared_tpr"]]
    group = min(compared, key=lambda g: groups[g]["tpr"])
    biased = judged.check(missed(production, world.schema, attribute, group, 0.5, seed=7))
    alarm = next(f for f in biased.findings if f.kind == "fairness")
    assert alarm.drifted, alarm.note
    assert alarm.detail["interval"][0] > limit  # the gate's interval rule: the whole interval is past it
    assert "fairness" in biased.report["drifted"]


# --- the command -------------------------------------------------------------------------------------


def run_drift(paths: Paths, *argv: str) -> tuple[int, dict[str, Any] | None]:
    out = paths.root / "out"
    status = main(["--root", str(paths.root), "drift", "--out", str(out), *argv])
    report = out / "drift.json"
    return status, json.loads(report.read_text()) if report.is_file() else None


@pytest.fixture
def table(world: World, tmp_path: Path) -> Callable[..., Path]:
    def write(rows: pd.DataFrame, name: str = "batch.csv") -> Path:
        """The rows as a table of records to check before scoring: no label, so no live fairness either."""
        path = tmp_path / name
        frame = rows.drop(columns=[scenarios.FEEDBACK, world.schema.label.name])
        frame.to_parquet(path) if name.endswith(".parquet") else frame.to_csv(path, index=False)
        return path

    return write


def test_the_command_exits_0_without_drift_and_writes_every_output(
    world: World, table: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    status, report = run_drift(world.paths, "--data", str(table(world.sample(3000, seed=8))))
    assert status == 0, capsys.readouterr()
    assert report is not None
    assert (report["verdict"], report["rows"]) == ("no drift", 3000)
    out = world.paths.root / "out"
    markdown = (out / "drift.md").read_text()
    assert markdown.splitlines()[1] == "## No drift"
    html = out / "drift.html"
    assert 100_000 < html.stat().st_size <= 5_000_000
    assert "no drift" in capsys.readouterr().out


def test_the_command_exits_1_on_drift_with_the_verdict_first(world: World, table: Callable[..., Path]) -> None:
    name = numeric_features(world)[0]
    rows = world.sample(3000, f"shift:{name}=0.5", seed=9)
    status, report = run_drift(world.paths, "--data", str(table(rows, "batch.parquet")), "--no-html")
    assert status == 1
    assert report is not None
    assert (report["verdict"], report["top_features"][0]) == ("drift", name)
    markdown = (world.paths.root / "out" / "drift.md").read_text().splitlines()
    assert markdown[1].startswith("## Drift found: data")
    assert any(name in line and "**drift**" in line for line in markdown)
    assert any(line.startswith("xychart-beta") for line in markdown)  # the charts GitHub draws in an issue


def test_unusable_input_exits_2_with_a_clear_message(
    world: World, table: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = world.sample(3000, seed=10)
    dropped = drift.request_names(world.schema)[0]
    status, _ = run_drift(world.paths, "--data", str(table(rows.drop(columns=[dropped]))))
    empty = tmp_path / "logs"
    empty.mkdir()
    cases = [
        (["--data", str(table(rows.drop(columns=[dropped])))], 2, f"the columns {dropped} are missing"),
        (["--data", str(table(rows.head(10), "few.csv"))], 2, "fewer than drift.min_rows"),
        (["--logs", str(empty), "--since", "24h"], 2, "0 predictions between"),
        (["--logs", str(tmp_path / "nowhere")], 2, "no such log folder"),
        (["--logs", str(empty), "--since", "yesterday"], 1, "not a time"),
    ]
    for argv, expected, message in cases:
        status, _ = run_drift(world.paths, *argv)
        err = capsys.readouterr().err
        assert (status, message in err, "Traceback" in err) == (expected, True, False), (argv, err)
