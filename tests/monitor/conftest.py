"""The monitoring tests' fixtures: a trained sample to serve and real servers on it (tests/serve/conftest.py),
and moto's S3 server with a bucket per test (tests/logs/conftest.py)."""

from tests.logs.conftest import bucket, moto
from tests.serve.conftest import served, start_server

__all__ = ["bucket", "moto", "served", "start_server"]
