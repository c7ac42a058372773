"""Reading params.yaml, and composing it from the Hydra groups in conf/."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from gitml.data.schema import DatasetSchema
from gitml.errors import GitmlError

CONFIG_NAME = "config"


def load_params(path: Path) -> dict[str, Any]:
    """Load params.yaml, the composed configuration every stage reads."""
    if not path.is_file():
        raise GitmlError(
            f"{path}: not found. It is composed from conf/; create it with `gitml params` (or `make params`)."
        )
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise GitmlError(f"{path}: not valid YAML ({exc}). Regenerate it from conf/ with `gitml params`.") from exc
    if not isinstance(loaded, dict):
        raise GitmlError(f"{path}: expected a mapping of config sections, got {type(loaded).__name__}.")
    return loaded


def section(params: Mapping[str, Any], name: str, source: Path) -> Mapping[str, Any]:
    """One top-level section of params.yaml, which must be a mapping."""
    value = params.get(name)
    if not isinstance(value, Mapping):
        raise GitmlError(
            f"{source}: has no `{name}` section. Check conf/config.yaml lists it, then run `gitml params`."
        )
    return value


def dataset_schema(params: Mapping[str, Any], source: Path) -> DatasetSchema:
    """The dataset schema from the `data` section of params.yaml."""
    return DatasetSchema.from_config(section(params, "data", source), source=f"{source.name}: data (from conf/data/)")


def compose_params(conf_dir: Path, output: Path, overrides: list[str] | None = None) -> None:
    """Compose conf/ into params.yaml exactly as `dvc exp run` does (DVC's Hydra integration)."""
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not (conf_dir / f"{CONFIG_NAME}.yaml").is_file():
        raise GitmlError(f"{conf_dir / (CONFIG_NAME + '.yaml')}: not found; it is the root of the Hydra config.")
    try:
        compose_and_dump(output, str(conf_dir.resolve()), None, CONFIG_NAME, str(conf_dir.parent), overrides or [])
    except (HydraException, OmegaConfBaseException) as exc:
        raise GitmlError(f"composing {conf_dir}: {exc}") from exc
