"""The FastAPI app, put together from its parts, and `serve`, which runs it under uvicorn.

gitml.serve.state    ServerState: the model, settings, validators, prediction log, metrics,
                     live accuracy and readiness of one server; its start (warm-up) and stop
gitml.serve.routes   the endpoints: one function each, with its method, path and documentation
gitml.serve.openapi  the answers' schemas and the OpenAPI document
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

import gitml
from gitml.errors import GitmlError
from gitml.paths import Paths
from gitml.serve import routes
from gitml.serve.config import ServeConfig
from gitml.serve.metrics import MetricsMiddleware
from gitml.serve.model import ServedModel
from gitml.serve.openapi import components, document
from gitml.serve.state import ServerState


def lifespan(state: ServerState) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Warm up before the first request; stop taking predictions and flush the log at shutdown."""

    @asynccontextmanager
    async def run(_: FastAPI) -> AsyncIterator[None]:
        state.start()
        try:
            yield
        finally:  # uvicorn comes here on SIGTERM once in-flight requests are answered
            state.stop()

    return run


def create_app(
    paths: Paths,
    env: Mapping[str, str] | None = None,
    host: str | None = None,
    port: int | None = None,
    log_dir: Path | None = None,
) -> FastAPI:
    """The server of the model in `paths.models`, configured by params.yaml's `serve` and the overrides."""
    state = ServerState.load(paths, env, host, port, log_dir)
    model, schema = state.model, state.model.schema
    app = FastAPI(
        title="gitml model server",
        version=gitml.__version__,
        description=(
            f"Scores records of the `{schema.name}` dataset with model {model.lineage.model_version}: the probability "
            f"of {schema.label.name} = {schema.positive_class!r} and the decision at threshold {model.threshold:g}."
        ),
        lifespan=lifespan(state),
        docs_url="/docs",
        redoc_url=None,
    )
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, endpoints=routes.paths())
    bodies = routes.add_routes(app, state)
    app.openapi = document(app, components(bodies, state.example, model.classes))  # type: ignore[method-assign]
    app.state.config, app.state.model, app.state.log, app.state.metrics, app.state.live = (
        state.config,
        model,
        state.log,
        state.metrics,
        state.live,
    )
    return app


def serve(paths: Paths, host: str | None, port: int | None, log_dir: Path | None) -> None:
    """Run the app under uvicorn (uvloop and httptools when installed) until SIGTERM or Ctrl-C."""
    import uvicorn

    app = create_app(paths, host=host, port=port, log_dir=log_dir)
    model: ServedModel = app.state.model
    config: ServeConfig = app.state.config
    print(
        f"gitml serve: model {model.lineage.model_version} (commit {model.lineage.git_sha[:12]}, threshold "
        f"{model.threshold:g}) on http://{config.host}:{config.port}; prediction log in {config.log.directory}",
        flush=True,
    )
    try:
        # One worker: replicas scale it (Kubernetes' HorizontalPodAutoscaler), and /metrics is per process.
        uvicorn.run(
            app,
            host=config.host,
            port=config.port,
            loop="auto",
            http="auto",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=20,
            log_level="info",
        )
    except SystemExit as exc:  # uvicorn exits 1 when the port is taken; its log says why
        raise GitmlError(f"the server stopped: could not listen on {config.host}:{config.port}.") from exc
