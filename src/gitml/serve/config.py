"""The `serve` section of params.yaml (conf/serve/), checked, with command-line overrides."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gitml.checked_config import ConfigReader
from gitml.errors import GitmlError

_KEYS = {"host", "port", "max_batch", "max_body_bytes", "prediction_log", "live_window"}
_LOG_KEYS = {"dir", "flush_seconds", "rotate_bytes", "rotate_seconds", "max_pending", "storage"}


@dataclass(frozen=True)
class LogConfig:
    """Where and how the prediction log is written: serve.prediction_log (conf/serve/), read by
    ServeConfig.from_config; no value here."""

    directory: Path
    flush_seconds: float
    rotate_bytes: int
    rotate_seconds: float
    max_pending: int
    # Where `gitml ship-logs` copies closed files, and the drift check reads them: a URL
    # (s3://bucket/prefix, gs://..., file://...) or a local folder, made absolute against the root.
    storage: str


@dataclass(frozen=True)
class ServeConfig:
    host: str
    port: int
    max_batch: int
    max_body_bytes: int
    log: LogConfig
    live_window: int

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], source: str, root: Path) -> ServeConfig:
        reader = ConfigReader(source, "serve", cfg, _KEYS)
        log = ConfigReader(source, "serve.prediction_log", reader.required("prediction_log"), _LOG_KEYS)
        port = reader.integer("port")
        if port > 65535:
            reader.fail(f"port must be at most 65535, got {port}")
        directory = Path(log.text("dir"))
        storage = log.text("storage")
        if "://" not in storage and storage != "dvc-remote" and not Path(storage).is_absolute():
            storage = str(root / storage)
        return cls(
            host=reader.text("host"),
            port=port,
            max_batch=reader.integer("max_batch", minimum=1),
            max_body_bytes=reader.integer("max_body_bytes", minimum=1024),
            log=LogConfig(
                directory=directory if directory.is_absolute() else root / directory,
                flush_seconds=log.bounded("flush_seconds", 0, open_ends=True, unit=" of seconds"),
                rotate_bytes=log.integer("rotate_bytes", minimum=1),
                rotate_seconds=log.bounded("rotate_seconds", 0, open_ends=True, unit=" of seconds"),
                max_pending=log.integer("max_pending", minimum=1),
                storage=storage,
            ),
            live_window=reader.integer("live_window", minimum=0),
        )

    def with_overrides(
        self, host: str | None = None, port: int | None = None, log_dir: Path | None = None
    ) -> ServeConfig:
        """The command line's --host, --port and --log-dir over params.yaml's values."""
        if port is not None and not 0 <= port <= 65535:
            raise GitmlError(f"--port {port}: a TCP port is between 0 and 65535.")
        log = self.log if log_dir is None else replace(self.log, directory=log_dir)
        return replace(
            self, host=self.host if host is None else host, port=self.port if port is None else port, log=log
        )
