"""A FastAPI app for the end-to-end tests: JSON, forms, uploads, streaming, background
tasks and a lifespan that leaves a trace in $LIFESPAN_LOG."""

import asyncio
import hashlib
import os
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import (
    BackgroundTasks,
    FastAPI,
    File,
    Form,
    Request,
    UploadFile,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.responses import PlainTextResponse, StreamingResponse

LIFESPAN_LOG = os.environ.get("LIFESPAN_LOG", "")


def _trace(line: str) -> None:
    if LIFESPAN_LOG:
        with open(LIFESPAN_LOG, "a") as fh:
            fh.write(f"{line} {os.getpid()}\n")


@asynccontextmanager
async def lifespan(app: FastAPI):
    _trace("startup")
    yield {"started_by": os.getpid()}
    _trace("shutdown")


app = FastAPI(lifespan=lifespan)


@app.get("/items/{item_id}")
async def item(item_id: int, q: str | None = None) -> dict:
    return {"item_id": item_id, "q": q}


@app.post("/json")
async def echo_json(request: Request) -> dict:
    return {"got": await request.json(), "state": request.state.started_by}


@app.post("/form")
async def form(name: Annotated[str, Form()], count: Annotated[int, Form()]) -> dict:
    return {"name": name, "count": count}


@app.post("/upload")
async def upload(file: Annotated[UploadFile, File()]) -> dict:
    data = await file.read()
    return {
        "filename": file.filename,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


@app.get("/stream")
async def stream(n: int = 5, every: float = 0.1) -> StreamingResponse:
    async def events():
        loop = asyncio.get_running_loop()
        for i in range(n):
            yield f"data: {i} {loop.time():.6f}\n\n".encode()
            await asyncio.sleep(every)

    return StreamingResponse(events(), media_type="text/event-stream")


@app.post("/background")
async def background(tasks: BackgroundTasks, path: str) -> PlainTextResponse:
    def write() -> None:
        with open(path, "w") as fh:
            fh.write("done after the response")

    tasks.add_task(write)
    return PlainTextResponse("queued")


@app.get("/pid")
async def pid() -> PlainTextResponse:
    return PlainTextResponse(str(os.getpid()))


@app.get("/sleep")
async def sleep(seconds: float = 1.0) -> PlainTextResponse:
    await asyncio.sleep(seconds)
    return PlainTextResponse(str(os.getpid()))


#: Requests in /held now, and the most there ever were at once (this process).
_held = {"now": 0, "peak": 0}


@app.get("/held")
async def held(seconds: float = 0.5) -> dict:
    """Sleeps, counted: how many requests this process served at once, at most."""
    _held["now"] += 1
    _held["peak"] = max(_held["peak"], _held["now"])
    try:
        await asyncio.sleep(seconds)
    finally:
        _held["now"] -= 1
    return {"pid": os.getpid(), "peak": _held["peak"]}


@app.get("/boom")
async def boom() -> dict:
    raise RuntimeError("the handler blew up")


@app.websocket("/ws/echo")
async def ws_echo(websocket: WebSocket) -> None:
    """Echo text and bytes; the text 'close:CODE' makes the server close with CODE; the
    first message is the process's pid."""
    await websocket.accept()
    await websocket.send_text(str(os.getpid()))
    while True:
        try:
            message = await websocket.receive()
        except WebSocketDisconnect:
            return
        if message["type"] == "websocket.disconnect":
            _trace(f"client closed {message.get('code')}")
            return
        text = message.get("text")
        if text is not None and text.startswith("close:"):
            await websocket.close(code=int(text[6:]), reason="asked to")
            return
        if text is not None:
            await websocket.send_text(text)
        else:
            await websocket.send_bytes(message["bytes"])


#: What /ws/flood got out and /ws/deaf took in so far (this process).
_flow = {"sent": 0}


@app.websocket("/ws/flood")
async def ws_flood(websocket: WebSocket, n: int = 64, size: int = 1024 * 1024) -> None:
    """Sends n messages of size bytes as fast as the way to the client takes them,
    counting each once its send returned (GET /flow tells)."""
    await websocket.accept()
    _flow["sent"] = 0
    payload = b"f" * size
    for _ in range(n):
        await websocket.send_bytes(payload)
        _flow["sent"] += 1
    await websocket.close()


@app.websocket("/ws/deaf")
async def ws_deaf(websocket: WebSocket, seconds: float = 5.0) -> None:
    """Accepts, then reads nothing for a while: what the client sends piles up on its way."""
    await websocket.accept()
    await asyncio.sleep(seconds)


@app.get("/flow")
async def flow() -> dict:
    return _flow


@app.websocket("/ws/bad-header")
async def ws_bad_header(websocket: WebSocket) -> None:
    """Accepts with a header value holding a control character: the core must not pass it."""
    await websocket.accept(headers=[(b"x-bad", b"a\x01b")])
    await websocket.send_text("never seen")


@app.websocket("/ws/refuse")
async def ws_refuse(websocket: WebSocket) -> None:
    await websocket.close(code=1008)


@app.websocket("/ws/slow-accept")
async def ws_slow_accept(websocket: WebSocket) -> None:
    await asyncio.sleep(2)
    await websocket.accept()
    await websocket.close()


@app.post("/upload-stream")
@app.post("/elsewhere/upload-stream")
async def upload_stream(request: Request) -> dict:
    """Reads the body as it arrives: when the first and last pieces came (the monotonic
    clock, which every process on the machine shares), how many, how big."""
    loop = asyncio.get_running_loop()
    first = last = 0.0
    pieces = size = 0
    digest = hashlib.sha256()
    async for chunk in request.stream():
        if not chunk:
            continue
        now = loop.time()
        first = first or now
        last = now
        pieces += 1
        size += len(chunk)
        digest.update(chunk)
    return {
        "first_at": first,
        "last_at": last,
        "pieces": pieces,
        "size": size,
        "sha256": digest.hexdigest(),
    }


@app.post("/refuse-upload")
async def refuse_upload() -> PlainTextResponse:
    """Answers without reading the body (as a 413 from the app would)."""
    return PlainTextResponse("too big", status_code=413)
