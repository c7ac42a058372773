"""dvc.yaml and src/gitml/paths.py name the same files, and every stage calls a real subcommand."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitml.cli import COMMANDS
from gitml.paths import Paths
from gitml.stages import DVC_STAGES


@pytest.fixture(scope="module")
def stages(repo: Path) -> dict[str, Any]:
    stages: dict[str, Any] = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return stages


def _outs(stage: dict[str, Any]) -> set[str]:
    listed = stage.get("outs", []) + stage.get("metrics", [])
    return {next(iter(o)) if isinstance(o, dict) else o for o in listed}


def test_stage_outputs_are_the_paths_the_code_writes(stages: dict[str, Any]) -> None:
    paths = Paths(Path())
    assert _outs(stages["ingest"]) == {str(paths.clean), str(paths.quarantine), str(paths.ingest_report)}
    assert _outs(stages["split"]) == {
        *(str(paths.split_file(n)) for n in ("train", "val", "test", "reference")),
        str(paths.split_report),
    }
    assert str(paths.clean) in stages["split"]["deps"]
    assert _outs(stages["train"]) == {
        str(paths.preprocess), str(paths.checkpoint), str(paths.dvclive / "plots"),
        str(paths.train_report), str(paths.dvclive / "metrics.json"),
    }  # fmt: skip
    assert _outs(stages["export"]) == {str(paths.onnx), str(paths.export_report)}
    assert _outs(stages["evaluate"]) == {
        str(paths.threshold), str(paths.test_scores), str(paths.plots), str(paths.metrics), str(paths.fairness),
        str(paths.intervals), str(paths.manifest),
    }  # fmt: skip
    assert _outs(stages["deepchecks"]) == {str(paths.deepchecks), str(paths.deepchecks_results)}
    assert {str(paths.checkpoint), str(paths.preprocess)} <= set(stages["export"]["deps"])
    assert {str(paths.onnx), str(paths.preprocess)} <= set(stages["evaluate"]["deps"])


def test_plot_definitions_read_files_the_stages_write(repo: Path) -> None:
    plots = yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]
    for definition in plots:
        ((title, spec),) = definition.items()
        for path in spec["y"]:
            assert path.startswith(("reports/plots/", "dvclive/plots/")), title
            assert (repo / path).is_file(), f"{title}: {path} (run `make run` and commit reports/ and dvclive/)"


def test_every_stage_calls_a_gitml_subcommand(stages: dict[str, Any]) -> None:
    for name, stage in stages.items():
        words = [w for w in stage["cmd"].split() if "=" not in w]  # after environment settings
        program, command = words[:2]
        assert program == "gitml", name
        assert command in COMMANDS, name


def test_every_source_dependency_exists(repo: Path, stages: dict[str, Any]) -> None:
    for name, stage in stages.items():
        for dep in stage["deps"]:
            if dep.startswith("src/"):
                assert (repo / dep).is_file(), f"{name} depends on missing {dep}"


# What each stage's command runs; the modules it imports (transitively) decide its outputs.
STAGE_MODULES = {s.name: s.module for s in DVC_STAGES}


def test_dvc_yaml_runs_the_listed_stages_in_order(stages: dict[str, Any]) -> None:
    """dvc.yaml has a stage for each DVC stage of gitml.stages.STAGES, and no other."""
    assert list(stages) == [s.name for s in DVC_STAGES]
    for stage in DVC_STAGES:
        assert stages[stage.name]["cmd"].split()[-1] == stage.name


# These name files and word error messages; no output's bytes depend on them.
NOT_DEPS = {"gitml.errors", "gitml.paths", "gitml.config"}


def _module_file(repo: Path, module: str) -> Path | None:
    base = repo / "src" / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(repo: Path, module: str) -> set[str]:
    """gitml modules `module` imports, at any depth (imports inside functions count too)."""
    import ast

    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = _module_file(repo, name)
        if name in seen or path is None:
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gitml"):
                todo.append(node.module)
                todo.extend(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                todo.extend(alias.name for alias in node.names if alias.name.startswith("gitml"))
    return seen


@pytest.mark.parametrize("stage", sorted(STAGE_MODULES))
def test_each_stage_depends_on_every_module_it_runs(repo: Path, stages: dict[str, Any], stage: str) -> None:
    """A code change that can alter a stage's outputs must re-run it (and nothing it cannot alter)."""
    deps = set(stages[stage]["deps"])
    modules = _imports(repo, STAGE_MODULES[stage])
    if stage in ("train", "export"):  # the network is named in config (`_target_`), not imported
        target = yaml.safe_load((repo / "params.yaml").read_text())["model"]["_target_"]
        modules |= _imports(repo, target.rsplit(".", 1)[0])
    needed = set()
    for module in modules - NOT_DEPS:
        path = _module_file(repo, module)
        assert path is not None
        if path.name != "__init__.py" or path.read_text().count("\n") > 8:
            needed.add(str(path.relative_to(repo)))
    assert sorted(needed - deps) == [], f"dvc.yaml: add these to the deps of {stage}"
    listed = {d for d in deps if d.startswith("src/")}
    assert sorted(listed - needed) == [], f"dvc.yaml: {stage} does not import these"


def test_ingest_depends_on_every_module_it_imports(repo: Path, stages: dict[str, Any]) -> None:
    """A code change that can alter the clean table must re-run ingest."""
    deps = set(stages["ingest"]["deps"])
    for module in ("stages/ingest", "data/raw", "data/validate", "data/anonymize", "data/pii", "data/schema"):
        assert f"src/gitml/{module}.py" in deps
    assert "src/gitml/io.py" in deps  # how outputs are written is part of their bytes
    assert "src/gitml/checked_config.py" in deps


def test_evaluate_reruns_on_every_param_the_manifest_hashes(stages: dict[str, Any]) -> None:
    """The manifest records a hash of these sections; a change to one must re-write it, or it goes stale."""
    from gitml.bundle import PARAMS

    assert set(PARAMS) <= set(stages["evaluate"]["params"])


def test_the_server_imports_nothing_of_training(repo: Path) -> None:
    """The server's imports say what it needs: the bundle, never model/ (torch) or a stage."""
    modules = _imports(repo, "gitml.serve.app")
    assert "gitml.bundle" in modules
    assert sorted(m for m in modules if m.startswith(("gitml.model.", "gitml.stages."))) == []


def test_model_holds_torch_code_only(repo: Path) -> None:
    """Nothing torch-free lives under model/: such code belongs where the server can import it."""
    for path in sorted((repo / "src" / "gitml" / "model").glob("*.py")):
        if path.name != "__init__.py":
            assert re.search(r"^(import|from) (torch|lightning)\b", path.read_text(), re.M), path.name
