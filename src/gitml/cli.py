"""The `gitml` command: one subcommand per pipeline stage, plus helpers around them.

dvc.yaml calls these subcommands; each reads params.yaml, runs its stage function and prints
one line about what it did. A problem in the user's data or config is printed as a message
that says what to do, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from gitml.errors import ExitStatus, GitmlError
from gitml.paths import Paths
from gitml.stages import DVC_STAGES, STAGES, Stage

Handler = Callable[[Paths, argparse.Namespace], str]
# The pipeline's stages (dvc.yaml): their time goes to the run log, never into their outputs.
TIMED = {s.name for s in DVC_STAGES}


class GateFailedError(Exception):
    """The recorded gate verdict is a fail: its table is the message, and the exit status is 1."""


def _params(paths: Paths) -> dict[str, object]:
    from gitml.config import load_params

    return load_params(paths.params)


def cmd_params(paths: Paths, args: argparse.Namespace) -> str:
    """Compose conf/ into params.yaml, or with --check fail if params.yaml is out of date."""
    from gitml.config import compose_params

    if not args.check:
        compose_params(paths.conf, paths.params, args.overrides)
        _preflight(paths)
        return f"params: composed {paths.conf.name}/ into {paths.params.name}; checked against the dataset schema"
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "params.yaml"
        compose_params(paths.conf, fresh, args.overrides)
        committed = paths.params.read_text(encoding="utf-8") if paths.params.is_file() else ""
        if fresh.read_text(encoding="utf-8") != committed:
            raise GitmlError(
                f"{paths.params} differs from what conf/ composes into. params.yaml is generated: "
                "edit conf/, then run `gitml params` (or `make params`) and commit both."
            )
    _preflight(paths)
    return f"params: {paths.params.name} matches {paths.conf.name}/"


def _preflight(paths: Paths) -> None:
    """Every problem of the composed params.yaml that a stage would meet, before any stage runs."""
    from gitml.preflight import problems

    found = problems(_params(paths), paths.params)
    if found:
        listed = "\n".join(f"  - {p}" for p in found)
        raise GitmlError(
            f"{paths.params.name} is composed, but {len(found)} setting{'s' if len(found) > 1 else ''} of conf/ "
            f"would stop the pipeline:\n{listed}"
        )


def run_stage(stage: Stage) -> Handler:
    """The subcommand of a stage: run it on params.yaml and print its one line."""

    def handler(paths: Paths, args: argparse.Namespace) -> str:
        module = stage.load()
        result = module.run(_params(paths), paths)
        # A stage that times parts of its work (the baselines, each fit) hands them to the run log.
        args.parts = module.parts(result) if hasattr(module, "parts") else None
        return str(module.message(result, paths))

    return handler


def cmd_gate(paths: Paths, args: argparse.Namespace) -> str:
    """Decide and write reports/gate.json (exit 0); with --check, exit 1 on a failed verdict."""
    from gitml.stages import gate

    if not args.check:
        return gate.message(gate.run(_params(paths), paths), paths)
    passed, text = gate.check(paths)
    if not passed:
        raise GateFailedError(text)
    return text


def cmd_summary(paths: Paths, args: argparse.Namespace) -> str:
    from gitml.summary import pipeline_summary

    return pipeline_summary(paths)


def cmd_serve(paths: Paths, args: argparse.Namespace) -> str:
    """Serve models/model.onnx over HTTP until SIGTERM or Ctrl-C."""
    from gitml.serve.app import serve

    serve(paths, args.host, args.port, args.log_dir)
    return "serve: stopped; the prediction log is flushed"


def cmd_draft_schema(paths: Paths, args: argparse.Namespace) -> str:
    """Draft conf/data/<name>.yaml from a data file."""
    from gitml.data.draft import draft_schema

    text = draft_schema(
        args.file, paths.root, args.name or args.file.name.split(".")[0], args.label, args.positive,
        args.delimiter, args.header,
    )  # fmt: skip
    if args.out is None:
        return text.rstrip("\n")
    if args.out.exists() and not args.force:
        raise GitmlError(f"{args.out} exists; pass --force to overwrite it, or choose another --out.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    return (
        f"draft-schema: wrote {args.out}. Review it, select it in conf/config.yaml (data: {args.out.stem}), "
        "then run `make params` and `make run`."
    )


def _params_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--check", action="store_true", help="fail if params.yaml is out of date")
    command.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. split.seed=7")


def _gate_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--check", action="store_true", help="print the recorded verdict; exit 1 if it failed (for make run and CI)"
    )


def _serve_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--host", help="address to listen on (default: serve.host, 127.0.0.1)")
    command.add_argument("--port", type=int, help="TCP port (default: serve.port, 8000)")
    command.add_argument("--log-dir", type=Path, help="prediction log directory (default: serve.prediction_log.dir)")


def _draft_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("file", type=Path, help="a CSV file (gzip-compressed or not)")
    command.add_argument("--label", required=True, help="the column to predict")
    command.add_argument("--positive", help="the label's positive class (default: the rarer of two)")
    command.add_argument("--name", help="dataset name (default: the file name)")
    command.add_argument("--delimiter", help="field delimiter (default: sniffed)")
    header = command.add_mutually_exclusive_group()
    header.add_argument(
        "--header", dest="header", action="store_true", default=None, help="the first line names columns"
    )
    header.add_argument("--no-header", dest="header", action="store_false", help="the file has no header line")
    command.add_argument("--out", type=Path, help="write here (e.g. conf/data/mine.yaml) instead of printing")
    command.add_argument("--force", action="store_true", help="overwrite --out if it exists")


COMMANDS: dict[str, tuple[Handler, str, Callable[[argparse.ArgumentParser], None] | None]] = {
    "params": (cmd_params, "compose conf/ into params.yaml (as `dvc exp run` does)", _params_arguments),
    **{s.name: (run_stage(s), s.help, None) for s in STAGES},
    "gate": (cmd_gate, next(s.help for s in STAGES if s.name == "gate"), _gate_arguments),
    "serve": (
        cmd_serve,
        "serve the model over HTTP (FastAPI + ONNX Runtime; needs only the serve extra)",
        _serve_arguments,
    ),
    "summary": (cmd_summary, "print what the last pipeline run produced", None),
    "draft-schema": (cmd_draft_schema, "draft a dataset config from your data file, to review", _draft_arguments),
}


def release_commands() -> dict[str, tuple[Handler, str, Callable[[argparse.ArgumentParser], None] | None]]:
    """The release workflows' subcommands (gitml.release): versions, overlays, smoke tests, lineage."""
    from gitml.release import lineage, notes, overlay, promotion, registry, render, smoke

    return {
        **registry.COMMANDS, **notes.COMMANDS, **lineage.COMMANDS, **overlay.COMMANDS,
        **render.COMMANDS, **smoke.COMMANDS, **promotion.COMMANDS,
    }  # fmt: skip


def monitor_commands() -> dict[str, tuple[Handler, str, Callable[[argparse.ArgumentParser], None] | None]]:
    """Monitoring: shipping the logs (gitml.logs), the drift check, the traffic simulator and
    the retraining data (gitml.monitor)."""
    from gitml.logs import ship
    from gitml.monitor import collect, command, simulate

    return {**ship.COMMANDS, **command.COMMANDS, **simulate.COMMANDS, **collect.COMMANDS}


COMMANDS.update(release_commands())
COMMANDS.update(monitor_commands())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gitml", description="One tabular model, run the GitOps way.")
    parser.add_argument("--root", type=Path, default=Path(), help="repository root (default: .)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text, add_arguments) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if add_arguments is not None:
            add_arguments(command)
    return parser


# Which extra of pyproject.toml brings each optional top-level module, and the make target that
# installs it (`make <target>` installs the pinned lock into .venv).
EXTRAS = {
    "pipeline": ("install", (
        "torch", "lightning", "torchmetrics", "hydra", "omegaconf", "dvc", "dvclive", "pandas", "sklearn", "deepchecks",
        "matplotlib", "onnx", "onnxscript",
    )),
    "serve": ("serve", ("fastapi", "uvicorn", "onnxruntime", "prometheus_client", "orjson", "starlette")),
    "release": ("install-release", ("gto",)),
    "logs": ("serve", ("pyarrow", "fsspec")),
    "bench": ("bench", ("bentoml",)),
}  # fmt: skip


def missing_dependency(exc: ModuleNotFoundError) -> str:
    """What to install for a module this command needs and this environment lacks."""
    module = (exc.name or str(exc)).split(".")[0]
    for extra, (target, modules) in EXTRAS.items():
        if module in modules:
            return (
                f"this command needs the Python package '{module}', which is in gitml's `{extra}` extra and not "
                f"installed here. Install it with `make {target}`, or into the environment you run gitml from: "
                f"pip install -c requirements/lock.txt -e '.[{extra}]'"
            )
    return (
        f"this command needs the Python module '{module}', which is not installed here. Install gitml's "
        "environment with `make install` (the pipeline), `make serve` (the server) or `make test` (everything)."
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = COMMANDS[args.command][0]
    paths = Paths(args.root)
    started = time.perf_counter()
    status = "failed"
    try:
        message = handler(paths, args)
        status = "ok"
        print(message, flush=True)
    except GateFailedError as exc:
        print(exc, file=sys.stderr)
        return 1
    except ExitStatus as exc:  # a finding, not a failure: the report goes to stdout
        print(exc.text, flush=True)
        return exc.status
    except GitmlError as exc:
        print(f"gitml {args.command}: error: {exc}", file=sys.stderr)
        return getattr(exc, "status", 1)
    except ModuleNotFoundError as exc:
        print(f"gitml {args.command}: error: {missing_dependency(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        status = "interrupted"
        return 130
    except BrokenPipeError:  # the reader left (`gitml summary | head -1`): the work is done, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        if args.command in TIMED:
            from gitml.runlog import record

            record(paths, args.command, time.perf_counter() - started, status, getattr(args, "parts", None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
