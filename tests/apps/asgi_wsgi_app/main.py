"""A WSGI app in main.py (found as ASGI): the start fails, naming --app-type wsgi."""


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi"]
