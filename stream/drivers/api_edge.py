"""The HTTP API's outermost layer: per-route metrics, and a user's recommendations answered before FastAPI."""
from __future__ import annotations

import time

import orjson


class Edge:
    """A plain ASGI wrapper around the app (Starlette's `BaseHTTPMiddleware` costs a task and a
    stream per request): request count and latency per route, and the hot path. GET
    /v1/users/U/recommendations with at most `k` and no `variant` is answered here (the cached list, or a
    fresh ask when there is none), before FastAPI's routing and parameter models, which cost most of a
    cached read's CPU: measured in bench/api.py. Anything else (`variant`, a bad `k`, another parameter)
    goes on to the FastAPI route, which declares the endpoint, documents it and answers the same way."""

    def __init__(self, app, api):
        self.app, self.api = app, api

    def __getattr__(self, name):           # the FastAPI app's attributes (state, openapi, routes) show through
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
        route = None
        try:
            parts = scope["path"].split("/")
            if (scope["method"] == "GET" and len(parts) == 5 and parts[:3] == ["", "v1", "users"]
                    and parts[4] == "recommendations" and parts[3]):
                body = await self.fast(parts[3], scope.get("query_string", b""))
                if body is not None:
                    route = "/v1/users/{user_id}/recommendations"
                    status[0] = 200
                    await send({"type": "http.response.start", "status": 200,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})
                    return
            await self.app(scope, receive, send_status)
        finally:
            route = route or getattr(scope.get("route"), "path", "other")
            self.api.latency.labels(route).observe(time.perf_counter() - t0)
            self.api.requests.labels(route, str(status[0])).inc()

    async def fast(self, user: str, query: bytes) -> bytes | None:
        k = 10
        for pair in query.split(b"&") if query else ():
            name, _, value = pair.partition(b"=")
            if name != b"k" or not value.isdigit() or not 1 <= int(value) <= 100:
                return None                       # anything else: the FastAPI route decides
            k = int(value)
        return orjson.dumps(await self.api.recommendations(user, k, None))   # cached, or asked afresh
