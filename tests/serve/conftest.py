"""A trained model on the Adult sample, and the real server (`gitml serve`, uvicorn) started on it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from gitml.config import load_params
from gitml.paths import Paths
from tests.conftest import Trained, copy_repo

MODEL_VERSION, GIT_SHA = "v1.4.2", "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="session")
def served(trained_sample: Trained, tmp_path_factory: pytest.TempPathFactory) -> Paths:
    """The suite's trained sample (tests/conftest.py), copied: the server writes its log beside it."""
    return copy_repo(trained_sample[0], tmp_path_factory.mktemp("served"))


def request_records(paths: Paths) -> list[dict[str, Any]]:
    """The test split's rows as request records (no label; missing values as None)."""
    frame = pd.read_parquet(paths.split_file("test"))
    label = next(name for name, spec in load_params(paths.params)["data"]["columns"].items() if spec["role"] == "label")
    frame = frame.drop(columns=[label]).astype(object)
    return [{str(k): (None if v is None or v != v else v) for k, v in row.items()} for row in frame.to_dict("records")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """`gitml serve` in a subprocess of its own, on a free loopback port."""

    root: Path
    log_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    argv: Sequence[str] = ()  # the command, when not this interpreter's `gitml`
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Server:
        command = [
            *(self.argv or [sys.executable, "-m", "gitml.cli"]),
            "--root",
            str(self.root),
            "serve",
            "--port",
            str(self.port),
            "--log-dir",
            str(self.log_dir),
        ]
        self.process = subprocess.Popen(
            command, env={**os.environ, **self.env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited with {self.process.returncode}:\n{self.process.stdout.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{self.url}/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the server was not ready within {timeout} s")

    def stop(self, timeout: float = 60.0) -> tuple[int, str]:
        """SIGTERM, as Kubernetes sends it; the exit status and everything the server printed."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            output, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
            raise AssertionError(f"the server did not stop within {timeout} s of SIGTERM:\n{output}") from None
        return self.process.returncode, output


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Any]:
    """Start servers for one test; any still running at its end are stopped."""
    servers: list[Server] = []

    def start(root: Path, **kwargs: Any) -> Server:
        kwargs.setdefault("log_dir", tmp_path / f"log{len(servers)}")
        kwargs.setdefault("env", {"GITML_MODEL_VERSION": MODEL_VERSION, "GITML_GIT_SHA": GIT_SHA})
        server = Server(root, **kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        if server.process is not None and server.process.poll() is None:
            server.stop()
