"""A startup file that imports fine but defines neither `application` nor `app`."""

print("no-app app: imported, but there is no application here")


def handler(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wrong name\n"]
