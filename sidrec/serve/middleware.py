"""One ASGI middleware for what every request goes through: the body-size limit and the metrics."""

from __future__ import annotations

import json
import time
from typing import Any

from sidrec.serve.metrics import ServeMetrics


class _TooLarge(Exception):
    pass


class BodyLimitAndMetrics:
    """Answers 413 for bodies over ``limit`` bytes (by ``Content-Length`` or while streaming) and records each
    request's status and latency under its route template (``/v1/items/{item_id}``, not each id)."""

    def __init__(self, app: Any, *, limit: int, metrics: ServeMetrics) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500, "sent": False}

        async def send_watched(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["sent"] = message["status"], True
            await send(message)

        try:
            length = int(dict(scope.get("headers", ())).get(b"content-length", b"0") or 0)
        except ValueError:
            length = 0
        try:
            if length > self.limit:
                raise _TooLarge
            await self.app(scope, self._limited(receive), send_watched)
        except _TooLarge:
            if not status["sent"]:
                await _send_json(send_watched, 413, {"detail": f"request body over {self.limit} bytes; send "
                                                               "fewer items or histories per request"})
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(endpoint, scope.get("method", ""), status["code"], time.perf_counter() - started)

    def _limited(self, receive: Any) -> Any:
        received = 0

        async def limited() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        return limited


async def _send_json(send: Any, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
