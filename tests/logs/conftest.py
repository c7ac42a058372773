"""Shared pieces of the log shipping and reading tests: moto's S3 server started for real on a
loopback port, a bucket per test, the shipper run as its own process, and log lines written as
the server writes them, of the suite's own toy dataset (tests/conftest.py). The server fixtures
come from tests/serve/conftest.py and serve whichever dataset conf/ selects: what a test sends
them and reads back is derived from the served bundle's schema, never assumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gitml import bundle
from gitml.data.schema import Column, DatasetSchema
from gitml.paths import Paths
from gitml.serve.requests import request_columns
from tests.conftest import TOY_CONFIG, tool, toy_config
from tests.serve.conftest import free_port, request_records, served, start_server

__all__ = ["served", "start_server"]  # the server fixtures, for the tests here

# Credentials moto takes; pyarrow's S3 client and boto3 read them from the environment.
AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class S3:
    """moto's S3 server in a process of its own."""

    endpoint: str
    process: subprocess.Popen[bytes]

    def env(self) -> dict[str, str]:
        """What a process needs to use it: the credentials and the endpoint (AWS_ENDPOINT_URL)."""
        return {**AWS, "AWS_ENDPOINT_URL": self.endpoint}

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"],
            region_name=AWS["AWS_DEFAULT_REGION"],
        )

    def names(self, bucket: str) -> list[str]:
        """The bucket's keys (a listing only: cheap enough to poll)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [entry["Key"] for page in pages for entry in page.get("Contents", [])]

    def keys(self, bucket: str) -> dict[str, bytes]:
        """Every object of the bucket: key -> content."""
        client = self.client()
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for entry in page.get("Contents", []):
                found[entry["Key"]] = client.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
        return found


def start_moto(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [str(tool("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise AssertionError(f"moto_server exited with {process.returncode}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1.0)
            return process
        except httpx.TransportError:
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError("moto_server did not answer within 60 s") from None
            time.sleep(0.1)


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def moto() -> Iterator[S3]:
    """One moto S3 server per test process (xdist worker), on a free loopback port."""
    port = free_port()
    process = start_moto(port)
    yield S3(f"http://127.0.0.1:{port}", process)
    stop(process)


@pytest.fixture
def bucket(moto: S3, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket; this process's environment points pyarrow's S3 client at moto."""
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    name = f"gitml-{uuid.uuid4().hex[:16]}"
    moto.client().create_bucket(Bucket=name)
    return name


def toy_schema() -> DatasetSchema:
    """The schema of the suite's toy dataset (tests/conftest.py), which the log lines written here hold."""
    return DatasetSchema.from_config(toy_config())


# --- What a served model takes: its bundle's schema -----------------------------------------------


def served_schema(paths: Paths) -> DatasetSchema:
    """The dataset schema of the model bundle a server on `paths` serves (whatever conf/ selects)."""
    return bundle.load(paths.models).schema


def served_records(paths: Paths) -> list[dict[str, Any]]:
    """The served test split's rows as request records (tests/serve/conftest.py's request_records),
    kept to the request fields: a column the split holds but a request does not (an identifier) goes."""
    names = [column.name for column in request_columns(served_schema(paths))]
    return [{name: record[name] for name in names} for record in request_records(paths)]


def served_label(paths: Paths) -> str:
    """A class of the served label, as feedback gives it (the positive one)."""
    return bundle.classes(served_schema(paths))[1]


def request_field(schema: DatasetSchema, what: str, wanted: Any) -> Column:
    """The first request field of `schema` that `wanted` accepts; the test is skipped where the
    dataset has none (the rejection it would send cannot be made for it)."""
    column = next((c for c in request_columns(schema) if wanted(c)), None)
    if column is None:
        pytest.skip(f"the served dataset {schema.name!r} has no {what} request field")
    return column


def categorical_field(schema: DatasetSchema) -> str:
    """A field that takes listed categories only: another value is a literal_error."""
    return request_field(schema, "categorical", lambda c: c.dtype == "categorical").name


def required_field(schema: DatasetSchema) -> str:
    """A field that may not be left out: leaving it out is `missing`."""
    return request_field(schema, "non-nullable", lambda c: not c.nullable).name


def bounded_field(schema: DatasetSchema) -> tuple[str, float]:
    """A numeric field with an upper bound (declared; an integer's is 2**53 without one), and a
    value past it: a less_than_equal."""
    column = request_field(
        schema,
        "numeric bounded",
        lambda c: c.dtype == "integer" or (c.dtype == "float" and c.maximum is not None),
    )
    bound = column.maximum if column.maximum is not None else 2.0**53
    past = bound + max(1000.0, abs(bound))
    return column.name, int(past) if column.dtype == "integer" else past


# --- The shipper as its own process ------------------------------------------------------------

SHIPPER = """
import argparse, sys
from gitml.errors import GitmlError
from gitml.logs.ship import COMMANDS
from gitml.paths import Paths

parser = argparse.ArgumentParser()
parser.add_argument("--root", type=Path, default=Path())
sub = parser.add_subparsers(dest="command", required=True)
for name, (_, help_text, add) in COMMANDS.items():
    add(sub.add_parser(name, help=help_text))
args = parser.parse_args()
try:
    print(COMMANDS[args.command][0](Paths(args.root), args), flush=True)
except GitmlError as exc:
    print(f"gitml {args.command}: error: {exc}", file=sys.stderr)
    sys.exit(1)
""".replace("import argparse, sys", "import argparse, sys\nfrom pathlib import Path")


def shipper(root: Path, argv: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`gitml ship-logs ARGV` in a process of its own, as the pod's sidecar runs it (gitml's own
    command line wires ship.COMMANDS the way this small parser does)."""
    return subprocess.Popen(
        [sys.executable, "-c", SHIPPER, "--root", str(root), "ship-logs", *argv],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- Log lines as the server writes them ---------------------------------------------------------


def stamp(moment: float) -> str:
    """A file name's start stamp."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(moment)) + f"{round(moment % 1 * 1e6):06d}Z"


def iso(moment: float) -> str:
    """A line's time, as gitml.serve.predlog.Clock writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{round(moment % 1 * 1e6):06d}Z"


def write_log(
    directory: Path, stream: str, started: float, lines: Sequence[dict[str, Any]], tag: str = "host-1"
) -> Path:
    """A closed log file of `lines` (compact JSON, as the server's orjson writes them)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stream}-{stamp(started)}-{tag}.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def ship_logs(root: Path, *argv: str) -> str:
    """`gitml ship-logs ARGV` on `root`, in this process, parsed by the command's own arguments: its line."""
    import argparse

    from gitml.logs.ship import COMMANDS
    from gitml.paths import Paths

    handler, _, add_arguments = COMMANDS["ship-logs"]
    parser = argparse.ArgumentParser(prog="gitml ship-logs")
    assert add_arguments is not None
    add_arguments(parser)
    return handler(Paths(root), parser.parse_args(list(argv)))


# One toy record as the model sees it, field by field: the request fields (no customer_id, which is
# an identifier, nor the label), the city generalised to its country, the balance under its top code.
RECORD: dict[str, Any] = {"age": 50, "city": "Germany", "balance": 1250.5, "segment": "retail"}
# The toy label's positive class, what feedback says by default.
POSITIVE: str = TOY_CONFIG["columns"]["churned"]["positive"]


def request_id(i: int) -> str:
    return f"{i:032x}"


def prediction(i: int, moment: float, records: int = 1, **inputs: list[Any]) -> dict[str, Any]:
    """A /predict line: request i, `records` records (RECORD with its age counting up), `inputs` over them."""
    columns = {name: [value] * records for name, value in RECORD.items()}
    columns["age"] = [20 + (i + k) % 60 for k in range(records)]
    columns.update(inputs)
    scores = [round((i * 7 + k) % 100 / 100, 2) for k in range(records)]
    return {
        "time": iso(moment), "request_id": request_id(i), "model_version": "v1.0.0", "inputs": columns,
        "scores": scores, "decisions": [s >= 0.5 for s in scores],
    }  # fmt: skip


def feedback(i: int, moment: float, label: str = POSITIVE, index: int = 0) -> dict[str, Any]:
    return {"time": iso(moment), "request_id": request_id(i), "index": index, "label": label}


def rejection(moment: float, *errors: tuple[str, str], status: int = 422, endpoint: str = "/predict") -> dict[str, Any]:
    return {
        "time": iso(moment), "endpoint": endpoint, "status": status,
        "errors": [{"field": f, "reason": r} for f, r in errors],
    }  # fmt: skip
