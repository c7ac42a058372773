"""The composed configuration checked as a whole before any stage runs (`gitml params`).

Each stage checks its own section when it runs; a name that refers to the dataset (a column to
stratify on, an attribute to gate or reweigh) would then only fail after the stages before it
have run, minutes into a pipeline. Here every section that names the schema's columns is read
against the schema at once, and every problem is listed, not just the first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gitml.checked_config import ConfigReader, suggest
from gitml.config import dataset_schema, section
from gitml.data.schema import DatasetSchema
from gitml.errors import GitmlError
from gitml.gates import SECTIONS as GATE_SECTIONS


def problems(params: Mapping[str, Any], source: Path) -> list[str]:
    """Every problem found in params.yaml's sections, each a message naming the key and the fix."""
    try:
        schema = dataset_schema(params, source)
    except GitmlError as exc:  # nothing else can be read against a schema that does not hold
        return [str(exc)]
    found: list[str] = []
    for check in CHECKS:
        try:
            check(params, source, schema)
        except GitmlError as exc:
            found.append(str(exc))
    return found


def _split(params: Mapping[str, Any], source: Path, schema: DatasetSchema) -> None:
    from gitml.data.split import SplitConfig

    config = SplitConfig.from_config(section(params, "split", source), schema.label.name, source.name)
    kept = [c.name for c in schema.kept_columns]
    for name in config.stratify:
        if name not in kept:
            dropped = " (its pii policy drops it at ingest)" if name in schema.names else suggest(name, kept)
            raise GitmlError(
                f"{source.name}: split.stratify names '{name}', which is not a column of the clean data{dropped}; "
                f"name columns of conf/data/ (the label {schema.label.name}, a protected attribute), or null for "
                "the label alone."
            )


def _train(params: Mapping[str, Any], source: Path, schema: DatasetSchema) -> None:
    train = section(params, "train", source)
    reweigh = ConfigReader(source.name, "train.reweigh", train.get("reweigh"), {"enabled", "attributes"})
    if reweigh.get("attributes") is not None:
        schema.protected_named(reweigh.strings("attributes"), "train.reweigh.attributes", source.name)


def _evaluate(params: Mapping[str, Any], source: Path, schema: DatasetSchema) -> None:
    evaluate = section(params, "evaluate", source)
    reader = ConfigReader(source.name, "evaluate", evaluate, set(evaluate))
    for key in ("min_group_size", "min_group_cases"):
        reader.integer(key, minimum=1)


def _deepchecks(params: Mapping[str, Any], source: Path, schema: DatasetSchema) -> None:
    from gitml.stages.deepchecks import read_config

    read_config(_gates(params, source).get("deepchecks", {}), source.name)


def _fairness(params: Mapping[str, Any], source: Path, schema: DatasetSchema) -> None:
    from gitml.gates.fairness import gated_limits

    gated_limits(_gates(params, source).get("fairness", {}), source.name, [c.name for c in schema.protected_columns])


def _champion(params: Mapping[str, Any], source: Path, schema: DatasetSchema) -> None:
    from gitml.gates.champion import ChampionConfig

    ChampionConfig.from_config(_gates(params, source).get("champion"), source.name)


def _baselines(params: Mapping[str, Any], source: Path, schema: DatasetSchema) -> None:
    from gitml.evaluate.classical import BaselinesConfig
    from gitml.gates.baselines import BaselinesGateConfig

    baselines = BaselinesConfig.from_config(section(params, "baselines", source), source.name)
    gate = BaselinesGateConfig.from_config(_gates(params, source).get("baselines"), source.name)
    if gate.enabled and not baselines.enabled:
        raise GitmlError(
            f"{source.name}: gates.baselines.enabled is true, but baselines.enabled is false: the gate would "
            "compare the network with baselines that are never fitted. Turn the baselines on (conf/config.yaml), "
            "or the gate's check off (gates.baselines.enabled: false in conf/gates/)."
        )


def _card(params: Mapping[str, Any], source: Path, schema: DatasetSchema) -> None:
    from gitml.report.card import read_card

    read_card({"name": section(params, "data", source).get("name"), "card": params.get("card")}, source.name)


def _gates(params: Mapping[str, Any], source: Path) -> Mapping[str, Any]:
    gates = section(params, "gates", source)
    return ConfigReader(source.name, "gates", gates, set(GATE_SECTIONS)).mapping


CHECKS: tuple[Callable[[Mapping[str, Any], Path, DatasetSchema], None], ...] = (
    _split, _train, _evaluate, _deepchecks, _fairness, _champion, _baselines, _card,
)  # fmt: skip
