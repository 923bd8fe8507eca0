"""What a FastAPI app in app.py looks like to a WSGI server: an object whose __call__ is
async and takes (scope, receive, send) (a Starlette-like app, without the dependency)."""


class App:
    def __init__(self):
        self.routes = {}

    async def __call__(self, scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi"})


app = App()
