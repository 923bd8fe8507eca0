"""A bare ASGI 3 app in asgi.py, standard library only (so any Python can run it): it
answers with the class of the event loop it runs on, e.g. uvloop.Loop."""

import asyncio


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    loop = type(asyncio.get_running_loop())
    body = ("%s.%s" % (loop.__module__, loop.__qualname__)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})
