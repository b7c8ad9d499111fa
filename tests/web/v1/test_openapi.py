"""GET /v1/openapi.json describes exactly the routes the app serves (checked against the app's route table)."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.routing import Route

from web.pages import WebContext


async def test_the_document_lists_every_v1_route_and_method_and_nothing_else(app: Starlette, web: WebContext) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=web.base_url) as client:
        response = await client.get("/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    described = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    routed = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route) and route.path.startswith("/v1/") and route.path != "/v1/openapi.json"
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert described == routed
