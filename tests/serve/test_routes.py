"""The app's routes, read from the real app (built, not started): docs/serving.md's endpoint table
lists exactly them, and every POST is answered by the plain Starlette route in front of FastAPI's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Route

from gitml.paths import Paths
from gitml.serve.app import create_app
from gitml.serve.routes import ENDPOINTS
from tests.conftest import REPO

SERVING = REPO / "docs" / "serving.md"
# A row of the endpoint table: | `METHOD /path` | what |
ROW = re.compile(r"^\|\s*`(?P<method>[A-Z]+) (?P<path>/[^`\s]*)`\s*\|", re.M)


@pytest.fixture(scope="module")
def app(served: Paths, tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return create_app(served, env={}, log_dir=tmp_path_factory.mktemp("routes") / "log")


def documented(path: Path) -> list[tuple[str, str]]:
    """(method, path) of each row of the table under '## Endpoints'."""
    section = path.read_text(encoding="utf-8").split("\n## Endpoints\n", 1)[1].split("\n## ", 1)[0]
    return [(m["method"], m["path"]) for m in ROW.finditer(section)]


def routed(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route the app answers. HEAD is left out: Starlette adds it to the GET
    routes it makes itself (/docs, /openapi.json), and it is not a method of its own."""
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }


def test_the_endpoint_table_lists_exactly_the_apps_routes(app: FastAPI) -> None:
    rows = documented(SERVING)
    assert len(rows) == len(set(rows)), f"a route has more than one row in {SERVING.name}: {sorted(rows)}"
    missing = sorted(routed(app) - set(rows))
    extra = sorted(set(rows) - routed(app))
    assert not missing, f"routes missing from the endpoint table in docs/{SERVING.name}: {missing}"
    assert not extra, f"rows of the endpoint table in docs/{SERVING.name} that the app does not route: {extra}"


def test_every_endpoint_is_documented_and_a_post_answered_by_a_plain_route(app: FastAPI) -> None:
    api = {(method, r.path): r for r in app.routes if isinstance(r, APIRoute) for method in r.methods or ()}
    assert sorted(api) == sorted((e.method, e.path) for e in ENDPOINTS)
    assert all(route.include_in_schema for route in api.values())
    for endpoint in (e for e in ENDPOINTS if e.method == "POST"):
        first = next(
            r for r in app.routes if isinstance(r, Route) and r.path == endpoint.path and "POST" in (r.methods or ())
        )
        assert type(first) is Route, f"POST {endpoint.path} goes through FastAPI's route"
        assert first.endpoint is api[("POST", endpoint.path)].endpoint  # the same handler
