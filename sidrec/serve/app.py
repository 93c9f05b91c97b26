"""The HTTP API (FastAPI): ``create_app`` builds it around one ``Server``.

Reads: ``POST /v1/recommend``, ``POST /v1/recommend/batch``, ``GET /v1/items/{id}``, ``GET /v1/info``.
Writes (``Authorization: Bearer $SIDREC_API_KEY``): ``POST /v1/items``, ``POST /v1/items/remove``,
``POST /v1/snapshot``. Operations: ``GET /healthz``, ``GET /readyz``, ``GET /metrics``; the OpenAPI page is
``/docs``. Every error is a JSON body ``{"detail": ...}`` with a status that says whose fault it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import math
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from sidrec.serve import schemas as S
from sidrec.serve.batcher import QueueFull
from sidrec.serve.middleware import BodyLimitAndMetrics
from sidrec.serve.server import Server, ServeSettings, UnknownItems
from sidrec.serve.state import Conflict, default_state_dir
from sidrec.utils.provenance import GENERATOR_PROVENANCE_ATTR
from sidrec.utils.version import __version__

logger = logging.getLogger(__name__)

__all__ = ["create_app"]


def create_app(run: str | os.PathLike | None = None, *, settings: ServeSettings | None = None,
               load_in_background: bool = True, **options: Any) -> FastAPI:
    """The app serving ``run`` (a trained run folder) from its state folder (``options['state_dir']``, default
    ``RUN.serving`` beside it); ``options`` are ``ServeSettings`` fields, keys come from the environment."""
    if settings is None:
        if run is None and "state_dir" not in options:
            raise ValueError("give the trained run folder, or state_dir= (a replica of a writer's state folder)")
        state_dir = Path(options.pop("state_dir", None) or default_state_dir(run))
        settings = ServeSettings.from_env(state_dir=state_dir, run=Path(run) if run else None, **options)
    server = Server(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server.start(background=load_in_background)
        yield
        await asyncio.to_thread(server.stop)

    app = FastAPI(title="sidrec", version=__version__, lifespan=lifespan,
                  description="Next-item recommendations from semantic IDs, with a live catalog.")
    app.state.server = server
    app.add_middleware(BodyLimitAndMetrics, limit=settings.max_body_bytes, metrics=server.metrics)
    _add_error_handlers(app)
    _add_read_routes(app, server)
    _add_write_routes(app, server)
    _add_ops_routes(app, server)
    return app


# -- guards ---------------------------------------------------------------------------------------
def _ready(server: Server) -> Server:
    if not server.ready:
        raise HTTPException(503, server.error or "loading the model and replaying the change log",
                            headers={"Retry-After": "2"})
    return server


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _check_key(request: Request, *keys: str | None) -> None:
    token = _bearer(request)
    if token is None:
        raise HTTPException(401, "missing 'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"})
    if not any(k is not None and hmac.compare_digest(token.encode(), k.encode()) for k in keys):
        raise HTTPException(403, "wrong key")


def _check_read(request: Request, server: Server) -> None:
    s = server.settings
    if s.read_key is not None:
        _check_key(request, s.read_key, s.api_key)


def _check_write(request: Request, server: Server) -> None:
    s = server.settings
    if s.read_only:
        raise HTTPException(403, "this server is a read replica: send writes to the writer")
    if s.api_key is not None:
        _check_key(request, s.api_key)
    elif not s.loopback_only:
        raise HTTPException(403, "writes are off: this server listens beyond loopback and SIDREC_API_KEY is not "
                                 "set; restart it with SIDREC_API_KEY set")


async def _wait(future: Any) -> Any:
    return await asyncio.wrap_future(future)


def _submit(server: Server, fn, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except QueueFull as e:
        raise HTTPException(503, f"overloaded: {e}; retry shortly", headers={"Retry-After": "1"}) from None


# -- reads ----------------------------------------------------------------------------------------
def _ranked(recs: list, used: int, total: int, skipped: int) -> dict[str, Any]:
    items = [{"item_id": r.item_id, "score": r.score if math.isfinite(r.score) else None, "title": r.title}
             for r in recs]
    return {"items": items, "history_used": used, "history_truncated": total > used, "skipped_unknown": skipped}


async def _recommend(server: Server, histories: list[list[Any]], options: S.RecommendOptions
                     ) -> tuple[list[dict[str, Any]], int]:
    known, skipped, unknown = [], [], []
    for n, history in enumerate(histories):
        try:
            ids, sk = server.known_history(history, index=n, on_unknown=options.on_unknown)
        except UnknownItems as e:
            unknown.extend(e.unknown)
            continue
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        known.append(ids)
        skipped.append(sk)
    if unknown:
        raise HTTPException(422, {"message": str(UnknownItems(unknown)),
                                  "unknown": [{"history": h, "item_id": i} for h, i in unknown]})
    future = _submit(server, server.submit_read, known, k=options.k, exclude_seen=options.exclude_seen,
                     cold_share=options.cold_share)
    try:
        results, version = await _wait(future)
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    window = server.window()
    return [_ranked(recs, min(len(ids), window), len(ids), sk)
            for recs, ids, sk in zip(results, known, skipped, strict=True)], version


def _add_read_routes(app: FastAPI, server: Server) -> None:
    @app.post("/v1/recommend", response_model=S.RecommendResponse, tags=["recommend"])
    async def recommend(body: S.RecommendRequest, request: Request) -> Response:
        """Top-k items for one history (item ids, oldest first)."""
        _ready(server)
        _check_read(request, server)
        results, version = await _recommend(server, [body.history], body)
        return JSONResponse({**results[0], "catalog_version": version})  # built to the schema: not re-validated

    @app.post("/v1/recommend/batch", response_model=S.BatchRecommendResponse, tags=["recommend"])
    async def recommend_batch(body: S.BatchRecommendRequest, request: Request) -> Response:
        """Top-k items for each of many histories (one answer per history, in order)."""
        _ready(server)
        _check_read(request, server)
        results, version = await _recommend(server, body.histories, body)
        return JSONResponse({"results": results, "catalog_version": version})

    @app.get("/v1/items/{item_id}", response_model=S.ItemInfo, tags=["catalog"])
    async def get_item(item_id: str, request: Request) -> dict[str, Any]:
        """An item's title, semantic ID and history in this catalog."""
        _ready(server)
        _check_read(request, server)
        info = await _wait(_submit(server, server.batcher.call, lambda: _item_info(server, item_id)))
        if info is None:
            raise HTTPException(404, f"unknown item id {item_id!r}")
        return info


def _item_info(server: Server, item_id: str) -> dict[str, Any] | None:
    state = server.state
    rec = state.recommender
    index = rec.item_index(item_id)
    if index is None:
        return None
    events = state.events.get(item_id, {})
    return {"item_id": item_id, "title": rec.titles[index],
            "semantic_id": [int(c) for c in rec.tokenizer.codes[index]],
            "status": "active" if rec.ranker.active[index] else "removed",
            "added_after_training": bool(index >= rec.tokenizer.num_fitted_items),
            "added_at": events.get("added_at"), "removed_at": events.get("removed_at"),
            "catalog_version": state.version}


# -- writes ---------------------------------------------------------------------------------------
async def _write(server: Server, request: Request, name: str, op: Any) -> tuple[Any, int]:
    """``op(state)`` on the worker, after the guards; the write's errors as statuses; counted as ``name``."""
    _ready(server)
    _check_write(request, server)
    try:
        result = await _wait(_submit(server, server.write, op))
        server.metrics.writes.labels(name).inc()
        return result
    except Conflict as e:
        raise HTTPException(409, str(e)) from None
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    except OSError as e:
        logger.error("a %s was not stored: %s", name, e)
        raise HTTPException(500, f"the write was not stored (nothing changed): {e}") from None


def _add_write_routes(app: FastAPI, server: Server) -> None:
    @app.post("/v1/items", response_model=S.AddItemsResponse, tags=["catalog"])
    async def add_items(body: S.AddItemsRequest, request: Request) -> dict[str, Any]:
        """Give new items semantic IDs and make them recommendable at once (durable when answered)."""
        items = [item.model_dump() for item in body.items]
        added, version = await _write(server, request, "add", lambda state: state.add(items))
        return {"added": added, "catalog_version": version}

    @app.post("/v1/items/remove", response_model=S.RemoveItemsResponse, tags=["catalog"])
    async def remove_items(body: S.RemoveItemsRequest, request: Request) -> dict[str, Any]:
        """Stop recommending these items (their ids stay taken)."""
        from sidrec.api import item_id_string

        ids = [item_id_string(i) for i in body.item_ids]
        removed, version = await _write(server, request, "remove", lambda state: state.remove(ids))
        return {"removed": removed, "catalog_version": version}

    @app.post("/v1/snapshot", response_model=S.SnapshotResponse, tags=["operations"])
    async def snapshot(request: Request) -> dict[str, Any]:
        """Write a snapshot now (the change log starts again); ``snapshot`` is null when nothing changed."""
        _ready(server)
        _check_write(request, server)
        name, version = await _wait(_submit(server, server.snapshot))
        return {"snapshot": name, "catalog_version": version}


# -- operations -----------------------------------------------------------------------------------
def _add_ops_routes(app: FastAPI, server: Server) -> None:
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, Any]:
        """The process answers (it may still be loading)."""
        return {"alive": True}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> Response:
        """200 once the model is loaded and the change log replayed."""
        if not server.ready:
            return JSONResponse({"ready": False, "reason": server.error or "loading"}, status_code=503)
        return JSONResponse({"ready": True, "catalog_version": server.state.version})

    @app.get("/metrics", tags=["operations"])
    async def metrics() -> Response:
        """Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/info", tags=["operations"])
    async def info(request: Request) -> dict[str, Any]:
        """The model, its catalog and how this server runs."""
        _ready(server)
        _check_read(request, server)
        return _info(server)


def _info(server: Server) -> dict[str, Any]:
    state, s = server.state, server.settings
    rec = state.recommender
    config = rec.model.config
    return {
        "sidrec_version": __version__, "family": getattr(config, "sidrec_family", None),
        "preset": (getattr(config, GENERATOR_PROVENANCE_ATTR, None) or {}).get("preset"),  # as trained
        "model": {k: getattr(config, k, None) for k in ("d_model", "num_layers", "num_decoder_layers", "max_items")},
        "decoding": rec.settings.to_dict() if hasattr(rec.settings, "to_dict") else None,
        "fused_with_sasrec": rec.fusion is not None,
        "fusion": dataclasses.asdict(rec.fusion[1]) if rec.fusion is not None else None,  # weights, norm, text
        "catalog": {"items": rec.num_items, "rows": rec.tokenizer.num_items, "version": state.version,
                    "snapshot": state.snapshot_name, "writes_since_snapshot": state.writes_since_snapshot,
                    "dataset_fingerprint": rec.tokenizer.dataset_fingerprint},
        "serving": {"read_only": s.read_only, "max_batch": s.max_batch, "max_wait_ms": s.max_wait_ms,
                    "queue_size": s.queue_size, "snapshot_every": s.snapshot_every,
                    "writes_allowed": s.writes_allowed, "read_key": s.read_key is not None},
    }


# -- errors ---------------------------------------------------------------------------------------
def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse({"detail": "malformed JSON body: " + "; ".join(
                str(e.get("ctx", {}).get("error", e.get("msg"))) for e in errors)}, status_code=400)
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in content_type:
            return JSONResponse({"detail": f"the body must be JSON with 'Content-Type: application/json' (got "
                                           f"{content_type or 'no content type'})"}, status_code=400)
        return JSONResponse({"detail": [{"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg")}
                                        for e in errors]}, status_code=422)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); the server log has the details"},
                            status_code=500)
