"""A Starlette app for the end-to-end tests."""

import os

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route


async def home(request):
    return PlainTextResponse("hello from starlette")


async def headers(request):
    return JSONResponse(
        {
            "path": request.url.path,
            "query": str(request.query_params),
            "client": request.client.host if request.client else None,
            "host": request.headers.get("host"),
            "root_path": request.scope.get("root_path"),
            "http_version": request.scope.get("http_version"),
        }
    )


async def chunks(request):
    async def gen():
        for i in range(3):
            yield b"chunk %d\n" % i

    return StreamingResponse(gen(), media_type="text/plain")


async def pid(request):
    return PlainTextResponse(str(os.getpid()))


app = Starlette(
    routes=[
        Route("/", home),
        Route("/headers/{rest:path}", headers),
        Route("/chunks", chunks),
        Route("/pid", pid),
    ]
)


#: The same app under another name, for --startup-file main:api.
api = app
