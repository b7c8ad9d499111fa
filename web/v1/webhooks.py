"""The webhook endpoints API: create (the `whsec_` secret is shown once), list, delete, rotate the secret, re-enable."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from statemachine.services import webhook_endpoints as endpoints
from web.pages import context_of
from web.v1.auth import require_key
from web.v1.errors import ApiError, invalid
from web.v1.requests import json_object


def _endpoint_id(request: Request) -> int:
    raw = request.path_params["endpoint_id"]
    if not raw.isdigit() or not 0 < int(raw) < 2**63:
        raise _not_found()
    return int(raw)


def _not_found() -> ApiError:
    return ApiError(404, "endpoint_not_found", "There is no such webhook endpoint.")


async def create(request: Request) -> Response:
    await require_key(request)
    body = await json_object(request)
    runtime = context_of(request).runtime
    try:
        async with runtime.sessionmaker() as session, session.begin():
            row, secret = await endpoints.create_endpoint(
                session, runtime.cipher, body.get("url"), body.get("events"),
                allow_private=runtime.settings.webhook_allow_private,
            )  # fmt: skip
            shown = endpoints.endpoint_json(row)
    except endpoints.EndpointInputError as err:
        raise invalid(str(err)) from None
    return JSONResponse({**shown, "secret": secret}, status_code=201)


async def list_all(request: Request) -> Response:
    await require_key(request)
    async with context_of(request).runtime.sessionmaker() as session:
        rows = await endpoints.list_endpoints(session)
    return JSONResponse({"data": [endpoints.endpoint_json(row) for row in rows]})


async def remove(request: Request) -> Response:
    await require_key(request)
    endpoint_id = _endpoint_id(request)
    try:
        async with context_of(request).runtime.sessionmaker() as session, session.begin():
            await endpoints.delete_endpoint(session, endpoint_id)
    except endpoints.UnknownEndpointError:
        raise _not_found() from None
    return Response(status_code=204)


async def rotate_secret(request: Request) -> Response:
    await require_key(request)
    endpoint_id = _endpoint_id(request)
    runtime = context_of(request).runtime
    try:
        async with runtime.sessionmaker() as session, session.begin():
            secret = await endpoints.rotate_secret(session, runtime.cipher, endpoint_id)
    except endpoints.UnknownEndpointError:
        raise _not_found() from None
    return JSONResponse({"id": endpoint_id, "secret": secret})


async def enable(request: Request) -> Response:
    await require_key(request)
    endpoint_id = _endpoint_id(request)
    try:
        async with context_of(request).runtime.sessionmaker() as session, session.begin():
            shown = endpoints.endpoint_json(await endpoints.enable_endpoint(session, endpoint_id))
    except endpoints.UnknownEndpointError:
        raise _not_found() from None
    return JSONResponse(shown)


routes = [
    Route("/v1/webhook-endpoints", create, methods=["POST"]),
    Route("/v1/webhook-endpoints", list_all, methods=["GET"]),
    Route("/v1/webhook-endpoints/{endpoint_id}", remove, methods=["DELETE"]),
    Route("/v1/webhook-endpoints/{endpoint_id}/rotate-secret", rotate_secret, methods=["POST"]),
    Route("/v1/webhook-endpoints/{endpoint_id}/enable", enable, methods=["POST"]),
]
