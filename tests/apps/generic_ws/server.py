"""A generic app that serves WebSockets on $PORT with the websockets library (no loader:
Ferryman starts it with --app-start-command and speaks HTTP to it over loopback TCP).

Every connection first gets the process's pid; then text and bytes are echoed, and the
text "close:CODE" makes the server close with CODE. Plain HTTP GET / answers "ok".
"""

import asyncio
import os
from http import HTTPStatus

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def echo(websocket):
    await websocket.send(str(os.getpid()))
    try:
        async for message in websocket:
            if isinstance(message, str) and message.startswith("close:"):
                await websocket.close(int(message[6:]), "asked to")
                return
            await websocket.send(message)
    except ConnectionClosed:
        pass


def plain_http(connection, request):
    # Not an upgrade: an ordinary answer, as the app's other routes would give.
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return connection.respond(HTTPStatus.OK, "ok\n")
    return None


async def main():
    port = int(os.environ["PORT"])
    async with serve(echo, "127.0.0.1", port, process_request=plain_http, max_size=2**21):
        print("generic websocket app listening on %d" % port, flush=True)
        await asyncio.Future()


asyncio.run(main())
