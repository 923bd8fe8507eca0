"""HTTP/1.1 conformance table (RFC 9110, RFC 9112): one raw request per row, end to end.

Each row of ``TABLE`` is one request, as the exact bytes a client sends, and what the
front must do with it:

* ``status``: the status of the (first final) response; a tuple where either is right;
* ``after``: the connection afterwards: ``CLOSE`` (the server closes it within 5 s,
  sending nothing more) or ``OPEN`` (a following ``GET /`` on it is answered 200);
* optionally what the app saw: ``env`` (keys of the WSGI environ from ``/environ``;
  ``None`` means the key must be absent) or ``body`` (the body ``/echo`` returned);
* ``then``: bodies of further 200 responses to requests pipelined in the same bytes;
* ``interim``: the request is sent in two steps, head then body, and
  ``HTTP/1.1 100 Continue`` must come in between.

A row's id starts with the RFC and section it checks (``9112-3.2-two-hosts``); a comment
above each group quotes the requirement. Rows marked ``deviation`` encode where Ferryman
knowingly differs from the RFC. Where the RFC leaves a choice (reject or repair, MAY
combine), the row encodes Ferryman's choice: every request the front refuses gets the
front's own 4xx/5xx with ``Connection: close``, then the connection is closed.

One server runs the stub app for the whole module, with small limits (1 KiB bodies,
4 KiB heads) for the 413/431 rows, a 2 s body timeout for the incomplete-body row and a
keep-alive timeout far longer than the 5 s a ``CLOSE`` row waits, so that an idle
timeout cannot pass for a deliberate close.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from .harness import STUB, Server, serving
from .wire import Response, Wire

OPEN = "open"
CLOSE = "close"
HELLO = b"Hello from Ferryman's stub app\n"
NOT_FOUND = b"not found\n"
#: What an OPEN row sends next on the same connection; it must get 200 and HELLO.
PROBE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@dataclass(frozen=True)
class Case:
    id: str
    request: bytes
    status: int | tuple[int, ...]
    after: str
    env: Mapping[str, str | None] = field(default_factory=dict)
    body: bytes | None = None
    then: tuple[bytes, ...] = ()
    interim: bool = False


def _two(name: str, first: str, second: str) -> bytes:
    """GET /environ with the field ``name`` sent twice (for the repeated-field rows)."""
    return (
        f"GET /environ HTTP/1.1\r\nHost: 127.0.0.1\r\n{name}: {first}\r\n{name}: {second}\r\n\r\n"
    ).encode("latin-1")


TABLE = [
    # -- request line and request-target forms ------------------------------------------
    # RFC 9112 3.2.1: origin-form = absolute-path [ "?" query ]
    Case("9112-3.2.1-origin-form",
         b"GET /environ?a=b HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, OPEN,
         env={"REQUEST_METHOD": "GET", "PATH_INFO": "/environ", "QUERY_STRING": "a=b",
              "SERVER_PROTOCOL": "HTTP/1.1"}),
    # RFC 9112 3.2.2: "A server MUST accept the absolute-form in requests even though most
    # HTTP/1.1 clients will only send the absolute-form to a proxy." ... "When an origin
    # server receives a request with an absolute-form of request-target, the origin server
    # MUST ignore the received Host header field (if any) and instead use the host
    # information of the request-target."
    Case("9112-3.2.2-absolute-form",
         b"GET http://example.com/environ?q HTTP/1.1\r\nHost: other.test\r\n\r\n", 200, OPEN,
         env={"PATH_INFO": "/environ", "QUERY_STRING": "q", "HTTP_HOST": "example.com"}),
    Case("9112-3.2.2-absolute-form-https-with-port",
         b"GET https://example.com:8443/environ HTTP/1.1\r\nHost: example.com:8443\r\n\r\n",
         200, OPEN, env={"PATH_INFO": "/environ", "HTTP_HOST": "example.com:8443"}),
    # RFC 9112 3: "Recipients of an invalid request-line SHOULD respond with either a 400
    # (Bad Request) error or a 301 (Moved Permanently) redirect with the request-target
    # properly encoded. A recipient SHOULD NOT attempt to autocorrect and then process the
    # request without a redirect, since the invalid request-line might be deliberately
    # crafted to bypass security filters along the request chain."
    Case("9112-3.2.2-absolute-form-broken",
         b"PUT s://]ufd/: HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, CLOSE),
    Case("9112-3.2.2-absolute-form-ftp-scheme",
         b"GET ftp://example.com/environ HTTP/1.1\r\nHost: example.com\r\n\r\n", 400, CLOSE),
    Case("9112-3.2.2-absolute-form-userinfo",
         b"GET http://u@example.com/environ HTTP/1.1\r\nHost: example.com\r\n\r\n", 400, CLOSE),
    Case("9112-3.2.2-absolute-form-bad-port",
         b"GET http://example.com:8o/environ HTTP/1.1\r\nHost: example.com\r\n\r\n", 400, CLOSE),
    Case("9112-3-missing-target", b"GET HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, CLOSE),
    Case("9112-3-space-in-target",
         b"GET /environ x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, CLOSE),
    # RFC 3986 2.1 lets a path carry "%00"; Ferryman refuses a path that decodes to NUL
    # (no app can be given it safely): a refused request, so 400 and close.
    Case("3986-2.1-path-decodes-to-nul",
         b"GET /environ/a%00b HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, CLOSE),
    # RFC 9112 3.2.3: "The authority-form of request-target is only used for CONNECT
    # requests." RFC 9110 9.1: "When a request method is received that is unrecognized or
    # not implemented by an origin server, the origin server SHOULD respond with the 501
    # (Not Implemented) status code." (Ferryman is not a forward proxy: no CONNECT.)
    Case("9112-3.2.3-authority-form-with-get",
         b"GET example.com:80 HTTP/1.1\r\nHost: example.com:80\r\n\r\n", 400, CLOSE),
    Case("9112-3.2.3-connect",
         b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501, CLOSE),
    # RFC 9112 3.2.4: "The asterisk-form of request-target is only used for a server-wide
    # OPTIONS request." (The stub app answers 404 for the path "*".)
    Case("9112-3.2.4-asterisk-form-options",
         b"OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 404, OPEN, body=NOT_FOUND),
    Case("9112-3.2.4-asterisk-form-with-get",
         b"GET * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, CLOSE),
    # RFC 9112 2.2: "In the interest of robustness, a server that is expecting to receive
    # and parse a request-line SHOULD ignore at least one empty line (CRLF) received prior
    # to the request-line."
    Case("9112-2.2-empty-line-before-request-line",
         b"\r\nGET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, OPEN, body=HELLO),
    # RFC 9112 2.2: "Although the line terminator for the start-line and fields is the
    # sequence CRLF, a recipient MAY recognize a single LF as a line terminator and ignore
    # any preceding CR." Ferryman (llhttp) does not: a bare LF is malformed.
    Case("9112-2.2-bare-lf-line-endings",
         b"GET / HTTP/1.1\nHost: 127.0.0.1\n\n", 400, CLOSE),
    # -- methods ---------------------------------------------------------------------------
    # RFC 9110 9.1: "The method token is case-sensitive" ... "When a request method is
    # received that is unrecognized or not implemented by an origin server, the origin
    # server SHOULD respond with the 501 (Not Implemented) status code." Every method the
    # parser knows reaches the app: the standard ones (RFC 9110 9.3), PATCH (RFC 5789),
    # WebDAV (RFC 4918), PURGE and QUERY.
    Case("9110-9.3.2-head", b"HEAD /environ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, OPEN),
    Case("9110-9.3.3-post",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello",
         200, OPEN, body=b"hello"),
    Case("9110-9.3.4-put",
         b"PUT /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello",
         200, OPEN, body=b"hello"),
    Case("9110-9.3.5-delete", b"DELETE /environ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, OPEN,
         env={"REQUEST_METHOD": "DELETE"}),
    Case("9110-9.3.7-options", b"OPTIONS /environ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200,
         OPEN, env={"REQUEST_METHOD": "OPTIONS"}),
    Case("9110-9.3.8-trace", b"TRACE /environ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, OPEN,
         env={"REQUEST_METHOD": "TRACE"}),
    Case("5789-2-patch",
         b"PATCH /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello",
         200, OPEN, body=b"hello"),
    Case("4918-9.1-propfind", b"PROPFIND /environ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200,
         OPEN, env={"REQUEST_METHOD": "PROPFIND"}),
    Case("4918-9.3-mkcol", b"MKCOL /environ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, OPEN,
         env={"REQUEST_METHOD": "MKCOL"}),
    Case("4918-9.8-copy", b"COPY /environ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, OPEN,
         env={"REQUEST_METHOD": "COPY"}),
    Case("4918-9.9-move", b"MOVE /environ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, OPEN,
         env={"REQUEST_METHOD": "MOVE"}),
    Case("4918-9.10-lock", b"LOCK /environ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, OPEN,
         env={"REQUEST_METHOD": "LOCK"}),
    Case("9110-9.1-purge", b"PURGE /environ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, OPEN,
         env={"REQUEST_METHOD": "PURGE"}),
    Case("9110-9.1-query", b"QUERY /environ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, OPEN,
         env={"REQUEST_METHOD": "QUERY"}),
    Case("9110-9.1-unknown-method-foo",
         b"FOO /environ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 501, CLOSE),
    Case("9110-9.1-unknown-method-brew",
         b"BREW /environ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 501, CLOSE),
    Case("9110-9.1-lowercase-method-is-another-method",
         b"get /environ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 501, CLOSE),
    # RFC 9110 9.1: method = token; RFC 9110 5.6.2: tchar excludes "@" and control chars.
    Case("9110-9.1-method-not-a-token",
         b"G@T /environ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, CLOSE),
    Case("9110-9.1-method-with-control-char",
         b"GE\x01T /environ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, CLOSE),
    # -- versions --------------------------------------------------------------------------
    # RFC 9112 2.3: HTTP-version = HTTP-name "/" DIGIT "." DIGIT; HTTP-name = %s"HTTP";
    # "HTTP-version is case-sensitive." RFC 9110 15.6.6: "The 505 (HTTP Version Not
    # Supported) status code indicates that the server does not support, or refuses to
    # support, the major version of HTTP that was used in the request message."
    Case("9112-2.3-http10", b"GET /environ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", 200, CLOSE,
         env={"SERVER_PROTOCOL": "HTTP/1.0"}),
    Case("9112-2.3-http09-simple-request", b"GET /\r\n\r\n", 400, CLOSE),
    Case("9110-15.6.6-http20-request-line",
         b"GET / HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n", 505, CLOSE),
    # RFC 9113 3.4: "the connection preface starts with the string
    # PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" (prior-knowledge h2c, which Ferryman does not speak).
    Case("9113-3.4-h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, CLOSE),
    Case("9112-2.3-unknown-minor-version-1.2",
         b"GET / HTTP/1.2\r\nHost: 127.0.0.1\r\n\r\n", (400, 505), CLOSE),
    Case("9112-2.3-unknown-version-9.9",
         b"GET / HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n", (400, 505), CLOSE),
    Case("9112-2.3-lowercase-http-name",
         b"GET / http/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, CLOSE),
    Case("9112-2.3-version-without-minor",
         b"GET / HTTP/1\r\nHost: 127.0.0.1\r\n\r\n", 400, CLOSE),
    # -- Host ------------------------------------------------------------------------------
    # RFC 9112 3.2: "A server MUST respond with a 400 (Bad Request) status code to any
    # HTTP/1.1 request message that lacks a Host header field and to any request message
    # that contains more than one Host header field line or a Host header field with an
    # invalid field value." ... "If the authority component is missing or undefined for the
    # target URI, then a client MUST send a Host header field with an empty field value."
    Case("9112-3.2-missing-host", b"GET / HTTP/1.1\r\n\r\n", 400, CLOSE),
    Case("9112-3.2-absolute-form-without-host",
         b"GET http://example.com/environ HTTP/1.1\r\n\r\n", 400, CLOSE),
    Case("9112-3.2-missing-host-in-http10", b"GET /environ HTTP/1.0\r\n\r\n", 200, CLOSE,
         env={"HTTP_HOST": None, "SERVER_PROTOCOL": "HTTP/1.0"}),
    Case("9112-3.2-two-hosts",
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: example.com\r\n\r\n", 400, CLOSE),
    Case("9112-3.2-two-identical-hosts",
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\n\r\n", 400, CLOSE),
    Case("9112-3.2-empty-host", b"GET / HTTP/1.1\r\nHost:\r\n\r\n", 200, OPEN, body=HELLO),
    # -- field syntax ------------------------------------------------------------------------
    # RFC 9112 5.1: "No whitespace is allowed between the field name and colon. ... A server
    # MUST reject, with a response status code of 400 (Bad Request), any received request
    # message that contains whitespace between a header field name and colon."
    Case("9112-5.1-space-before-colon",
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A : v\r\n\r\n", 400, CLOSE),
    # RFC 9112 5: field-line = field-name ":" OWS field-value OWS; RFC 9110 5.1:
    # field-name = token (token = 1*tchar).
    Case("9112-5-empty-field-name",
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n: v\r\n\r\n", 400, CLOSE),
    Case("9112-5-space-in-field-name",
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX A: v\r\n\r\n", 400, CLOSE),
    Case("9112-5-invalid-field-name-chars",
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX[A]: v\r\n\r\n", 400, CLOSE),
    Case("9112-5-field-line-without-colon",
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A v\r\n\r\n", 400, CLOSE),
    # RFC 9112 5.2: "A server that receives an obs-fold in a request message that is not
    # within a message/http container MUST either reject the message by sending a 400 (Bad
    # Request) ... or replace each received obs-fold with one or more SP octets".
    Case("9112-5.2-obs-fold",
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\r\n b\r\n\r\n", 400, CLOSE),
    # RFC 9112 2.2: "A recipient that receives whitespace between the start-line and the
    # first header field MUST either reject the message as invalid or consume each
    # whitespace-preceded line without further processing of it".
    Case("9112-2.2-whitespace-before-first-field",
         b"GET / HTTP/1.1\r\n X-A: v\r\nHost: 127.0.0.1\r\n\r\n", 400, CLOSE),
    # RFC 9110 5.5: "Field values containing CR, LF, or NUL characters are invalid and
    # dangerous ... a recipient of CR, LF, or NUL within a field value MUST either reject
    # the message or replace each of those characters with SP". RFC 9112 2.2: "A recipient
    # of such a bare CR MUST consider that element to be invalid or replace each bare CR
    # with SP". field-vchar = VCHAR / obs-text: other controls are invalid, obs-text is not.
    Case("9110-5.5-nul-in-value",
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\x00b\r\n\r\n", 400, CLOSE),
    Case("9110-5.5-bare-cr-in-value",
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\rb\r\n\r\n", 400, CLOSE),
    Case("9110-5.5-bare-lf-in-value",
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\nb\r\n\r\n", 400, CLOSE),
    Case("9110-5.5-control-char-in-value",
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\x01b\r\n\r\n", 400, CLOSE),
    Case("9110-5.5-del-in-value",
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\x7fb\r\n\r\n", 400, CLOSE),
    Case("9110-5.5-obs-text-in-value",
         b"GET /environ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\xe9b\r\n\r\n", 200, OPEN,
         env={"HTTP_X_A": "a\xe9b"}),
    # RFC 9112 5.1: "The field line value does not include that leading or trailing
    # whitespace: OWS occurring before the first non-whitespace octet of the field line
    # value, or after the last non-whitespace octet of the field line value, is excluded by
    # parsers when extracting the field line value from a field line."
    Case("9112-5.1-ows-around-value-stripped",
         b"GET /environ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: \t v \t \r\n\r\n", 200, OPEN,
         env={"HTTP_X_A": "v"}),
    Case("9112-5.1-whitespace-inside-value-kept",
         b"GET /environ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A:a \t b\r\n\r\n", 200, OPEN,
         env={"HTTP_X_A": "a \t b"}),
    # RFC 9110 5.1: "Field names are case-insensitive".
    Case("9110-5.1-field-names-case-insensitive",
         b"GET /environ HTTP/1.1\r\nhost: 127.0.0.1\r\nx-a: v\r\n\r\n", 200, OPEN,
         env={"HTTP_X_A": "v", "HTTP_HOST": "127.0.0.1"}),
    # RFC 9110 5.1 allows "_" in a field name (it is a tchar); Ferryman drops such fields
    # (DESIGN.md 5) so that X_Foo cannot pose as X-Foo once both are HTTP_X_FOO.
    Case("9110-5.1-underscore-name-dropped",
         b"GET /environ HTTP/1.1\r\nHost: 127.0.0.1\r\nX_Foo: smuggled\r\n\r\n", 200, OPEN,
         env={"HTTP_X_FOO": None}),
    # -- repeated fields ---------------------------------------------------------------------
    # RFC 9110 5.3: "A sender MUST NOT generate multiple field lines with the same name in a
    # message ... unless that field's definition allows multiple field line values to be
    # recombined as a comma-separated list". Ferryman refuses a repeated singleton field
    # (the app could otherwise see "a, b" where one value is meant) ...
    Case("9110-5.3-two-content-type",
         _two("Content-Type", "text/plain", "application/json"), 400, CLOSE),
    Case("9110-5.3-two-authorization",
         _two("Authorization", "Basic YTpi", "Bearer x"), 400, CLOSE),
    Case("9110-5.3-two-proxy-authorization",
         _two("Proxy-Authorization", "Basic YTpi", "Bearer x"), 400, CLOSE),
    Case("9110-5.3-two-range", _two("Range", "bytes=0-1", "bytes=2-3"), 400, CLOSE),
    Case("9110-5.3-two-if-range", _two("If-Range", '"a"', '"b"'), 400, CLOSE),
    Case("9110-5.3-two-if-modified-since",
         _two("If-Modified-Since", "Sun, 06 Nov 1994 08:49:37 GMT",
              "Mon, 07 Nov 1994 08:49:37 GMT"), 400, CLOSE),
    Case("9110-5.3-two-if-unmodified-since",
         _two("If-Unmodified-Since", "Sun, 06 Nov 1994 08:49:37 GMT",
              "Mon, 07 Nov 1994 08:49:37 GMT"), 400, CLOSE),
    Case("9110-5.3-two-max-forwards", _two("Max-Forwards", "1", "2"), 400, CLOSE),
    Case("9110-5.3-two-referer", _two("Referer", "http://a.test/", "http://b.test/"), 400,
         CLOSE),
    Case("9110-5.3-two-date",
         _two("Date", "Sun, 06 Nov 1994 08:49:37 GMT", "Mon, 07 Nov 1994 08:49:37 GMT"),
         400, CLOSE),
    Case("9110-5.3-two-from", _two("From", "a@a.test", "b@b.test"), 400, CLOSE),
    # ... and joins the lines of a list field: "A recipient MAY combine multiple field lines
    # within a field section that have the same field name into one field line ... by
    # appending each subsequent field line value to the initial field line value in order,
    # separated by a comma (",") and optional whitespace".
    Case("9110-5.3-two-accept",
         b"GET /environ HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n"
         b"Accept: text/html\r\n\r\n", 200, OPEN,
         env={"HTTP_ACCEPT": "text/plain, text/html"}),
    Case("9110-5.3-two-cache-control",
         b"GET /environ HTTP/1.1\r\nHost: 127.0.0.1\r\nCache-Control: no-cache\r\n"
         b"Cache-Control: max-age=0\r\n\r\n", 200, OPEN,
         env={"HTTP_CACHE_CONTROL": "no-cache, max-age=0"}),
    Case("9110-5.3-two-unknown-fields",
         b"GET /environ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Multi: 1\r\nX-Multi: 2\r\n\r\n", 200,
         OPEN, env={"HTTP_X_MULTI": "1, 2"}),
    # RFC 9113 8.2.3 (the rule for passing Cookie on to HTTP/1.1-style consumers): multiple
    # Cookie fields "MUST be concatenated into a single octet string using the two-octet
    # delimiter of 0x3b, 0x20 (the ASCII string "; ")".
    Case("9113-8.2.3-two-cookies",
         b"GET /environ HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
         200, OPEN, env={"HTTP_COOKIE": "a=1; b=2"}),
    # -- framing: Content-Length ------------------------------------------------------------
    # RFC 9112 6.2: "If a valid Content-Length header field is present without
    # Transfer-Encoding, its decimal value defines the expected message body length in
    # octets." RFC 9112 6.3: "If this is a request message and none of the above are true,
    # then the message body length is zero (no message body is present)."
    Case("9112-6.2-content-length",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello",
         200, OPEN, body=b"hello"),
    Case("9112-6.2-content-length-zero",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
         200, OPEN, body=b""),
    Case("9112-6.3-no-length-means-no-body",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, OPEN, body=b""),
    # RFC 9110 9.3.1: "content received in a GET request has no generally defined
    # semantics" (but it is framed like any other body).
    Case("9110-9.3.1-get-with-body",
         b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello",
         200, OPEN, body=b"hello"),
    # RFC 9110 8.6: Content-Length = 1*DIGIT; "a recipient MUST anticipate potentially
    # large decimal numerals and prevent parsing errors due to integer conversion overflows".
    # RFC 9112 6.3: "If a message is received without Transfer-Encoding and with an invalid
    # Content-Length header field, then the message framing is invalid ... the server MUST
    # respond with a 400 (Bad Request) status code and then close the connection."
    # Duplicates with equal values: RFC 9110 8.6 lets a recipient "either reject the message
    # as invalid or replace the duplicated field values with a single valid Content-Length"
    # (the parser rejects).
    Case("9110-8.6-content-length-not-a-number",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3x\r\n\r\nabc", 400, CLOSE),
    Case("9110-8.6-content-length-plus-sign",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: +5\r\n\r\nhello", 400,
         CLOSE),
    Case("9110-8.6-content-length-negative",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n", 400, CLOSE),
    Case("9110-8.6-content-length-overflow",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999999999999999999"
         b"\r\n\r\n", 400, CLOSE),
    Case("9110-8.6-content-length-list",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5, 5\r\n\r\nhello", 400,
         CLOSE),
    Case("9112-6.3-two-different-content-lengths",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nContent-Length: 6"
         b"\r\n\r\nhello!", 400, CLOSE),
    Case("9110-8.6-two-equal-content-lengths",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nContent-Length: 5"
         b"\r\n\r\nhello", 400, CLOSE),
    # RFC 9110 15.5.14: "The 413 (Content Too Large) status code indicates that the server is
    # refusing to process a request because the request content is larger than the server
    # is willing or able to process." (--max-body-size 1k)
    Case("9110-15.5.14-content-length-huge",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000000\r\n\r\n",
         413, CLOSE),
    Case("9110-15.5.14-body-over-limit",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000,
         413, CLOSE),
    Case("9110-15.5.14-chunked-body-over-limit",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         + (b"12c\r\n" + b"y" * 300 + b"\r\n") * 4 + b"0\r\n\r\n", 413, CLOSE),
    # RFC 6585 5: "The 431 status code indicates that the server is unwilling to process the
    # request because its header fields are too large." (--max-header-size 4k)
    Case("6585-5-header-fields-too-large",
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n",
         431, CLOSE),
    # -- framing: Transfer-Encoding -----------------------------------------------------------
    # RFC 9112 6.1: "A server MAY reject a request that contains both Content-Length and
    # Transfer-Encoding or process such a request in accordance with the Transfer-Encoding
    # alone. Regardless, the server MUST close the connection after responding to such a
    # request". "A server or client that receives an HTTP/1.0 message containing a
    # Transfer-Encoding header field MUST treat the message as if the framing is faulty,
    # even if a Content-Length is present, and close the connection after processing the
    # message." RFC 9112 6.3: "If a Transfer-Encoding header field is present in a request
    # and the chunked transfer coding is not the final encoding, the message body length
    # cannot be determined reliably; the server MUST respond with the 400 (Bad Request)
    # status code and then close the connection."
    Case("9112-6.1-content-length-and-chunked",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400, CLOSE),
    Case("9112-6.1-transfer-encoding-in-http10",
         b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
         400, CLOSE),
    Case("9112-6.3-transfer-encoding-gzip",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip\r\n\r\nhello",
         400, CLOSE),
    Case("9112-6.3-chunked-not-last",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
         b"5\r\nhello\r\n0\r\n\r\n", 400, CLOSE),
    # RFC 9112 7.1: "A recipient MUST be able to parse and decode the chunked transfer
    # coding." chunk-size = 1*HEXDIG; "Recipients MUST anticipate potentially large
    # hexadecimal numerals and prevent parsing errors due to integer conversion overflows".
    Case("9112-7.1-chunked",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 200, OPEN, body=b"hello world"),
    Case("9112-7.1-chunk-size-upper-hex",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"A\r\n0123456789\r\n0\r\n\r\n", 200, OPEN, body=b"0123456789"),
    Case("9112-7.1-chunk-size-lower-hex",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"a\r\n0123456789\r\n0\r\n\r\n", 200, OPEN, body=b"0123456789"),
    Case("9112-7.1-chunk-size-overflow",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n", 400, CLOSE),
    Case("9112-7.1-chunk-size-not-hex",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"zz\r\nhello\r\n0\r\n\r\n", 400, CLOSE),
    Case("9112-7.1-chunk-data-longer-than-size",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"5\r\nhello!!\r\n0\r\n\r\n", 400, CLOSE),
    # Without its last chunk the body never ends: the next request's line is read as a
    # chunk size, which is invalid.
    Case("9112-7.1-no-last-chunk-then-next-request",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"5\r\nhello\r\nGET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, CLOSE),
    # RFC 9112 6.2: "If the sender closes the connection or the recipient times out before
    # the indicated number of octets are received, the recipient MUST consider the message
    # to be incomplete and close the connection." RFC 9110 15.5.9: "The 408 (Request
    # Timeout) status code indicates that the server did not receive a complete request
    # message within the time that it was prepared to wait." (--body-timeout 2)
    Case("9112-6.2-no-last-chunk-times-out",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"5\r\nhello\r\n", 408, CLOSE),
    # RFC 9112 7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
    # "A recipient MUST ignore unrecognized chunk extensions." (BWS is allowed on both
    # sides of ";" and "=", and a value may be a quoted-string.)
    Case("9112-7.1.1-chunk-extension",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"5;a=b\r\nhello\r\n0\r\n\r\n", 200, OPEN, body=b"hello"),
    Case("9112-7.1.1-chunk-extension-bws-before-semicolon",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"5 ;a=b\r\nhello\r\n0\r\n\r\n", 200, OPEN, body=b"hello"),
    Case("9112-7.1.1-chunk-extension-bws-around-semicolon",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"5 ; a=b\r\nhello\r\n0\r\n\r\n", 200, OPEN, body=b"hello"),
    Case("9112-7.1.1-chunk-extension-bws-around-equals-and-quoted",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"5; a = \"x; y\" ;b\r\nhello\r\n0\r\n\r\n", 200, OPEN, body=b"hello"),
    Case("9112-7.1.1-chunk-extension-malformed",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"5; a b\r\nhello\r\n0\r\n\r\n", 400, CLOSE),
    # RFC 9112 7.1.2: "A recipient that removes the chunked coding from a message MAY
    # selectively retain or discard the received trailer fields." (RFC 7230 4.1.2: trailers
    # must not carry fields needed for "routing (e.g., Host), ... authentication".)
    # Ferryman drops them: what comes after the head is body, never headers.
    Case("9112-7.1.2-trailer-fields-dropped",
         b"POST /environ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"5\r\nhello\r\n0\r\nX-Remote-User: admin\r\nHost: evil\r\n\r\n", 200, OPEN,
         env={"HTTP_X_REMOTE_USER": None, "HTTP_HOST": "127.0.0.1", "CONTENT_LENGTH": "5"}),
    Case("9112-7.1.2-trailer-fields-body-intact",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"5\r\nhello\r\n0\r\nX-Remote-User: admin\r\nHost: evil\r\n\r\n", 200, OPEN,
         body=b"hello"),
    # -- Expect ----------------------------------------------------------------------------
    # RFC 9110 10.1.1: "A server that receives an Expect field value containing a member
    # other than 100-continue MAY respond with a 417 (Expectation Failed) status code" ...
    # "A server that receives a 100-continue expectation in an HTTP/1.0 request MUST ignore
    # that expectation." RFC 9110 15.2: "a server MUST NOT send a 1xx response to an
    # HTTP/1.0 client."
    Case("9110-10.1.1-expect-100-continue",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
         b"Content-Length: 5\r\n\r\nhello", 200, OPEN, body=b"hello", interim=True),
    Case("9110-10.1.1-expect-100-continue-without-body",
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n\r\n", 200, OPEN,
         body=HELLO),
    Case("9110-10.1.1-expect-100-continue-in-http10",
         b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
         200, CLOSE, body=b"hello"),
    Case("9110-10.1.1-expect-unknown",
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 200-ok\r\n\r\n", 417, CLOSE),
    Case("9110-15.5.14-expect-100-continue-over-limit",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
         b"Content-Length: 2000\r\n\r\n", 413, CLOSE),
    # -- connections -----------------------------------------------------------------------
    # RFC 9112 9.3: "If the close connection option is present, the connection will not
    # persist after the current response; else, if the received protocol is HTTP/1.1 (or
    # later), the connection will persist after the current response; else, if the received
    # protocol is HTTP/1.0, the keep-alive connection option is present, ... and the
    # recipient wishes to honor the HTTP/1.0 keep-alive mechanism, the connection will
    # persist after the current response; otherwise, the connection will close after the
    # current response." RFC 9112 9.6: "A server that receives a close connection option
    # MUST initiate closure of the connection after it sends the final response".
    Case("9112-9.3-http11-persists", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, OPEN,
         body=HELLO),
    Case("9112-9.6-connection-close",
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 200, CLOSE,
         body=HELLO),
    Case("9112-9.3-http11-keep-alive-option",
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n", 200, OPEN,
         body=HELLO),
    Case("9112-9.3-http10-closes", b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", 200, CLOSE,
         body=HELLO),
    Case("9112-9.3-http10-keep-alive",
         b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n", 200, OPEN,
         body=HELLO),
    Case("9112-9.3-http10-keep-alive-any-case",
         b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: Keep-Alive\r\n\r\n", 200, OPEN,
         body=HELLO),
    # RFC 9112 9.3: 'If the "close" connection option is present, the connection will not
    # persist after the current response' — keep-alive beside it changes nothing.
    Case("9112-9.3-http10-close-beats-keep-alive",
         b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
         b"Connection: keep-alive\r\n\r\n", 200, CLOSE, body=HELLO),
    Case("9112-9.3-http11-close-among-options",
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive, Close\r\n\r\n",
         200, CLOSE, body=HELLO),
    # RFC 9112 9.3.2: "A server MAY process a sequence of pipelined requests in parallel if
    # they all have safe methods, but it MUST send the corresponding responses in the same
    # order that the requests were received."
    Case("9112-9.3.2-pipelining",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\none"
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\ntwo",
         200, OPEN, body=b"one", then=(b"two",)),
    # RFC 9110 7.8: "A server MAY ignore a received Upgrade header field if it wishes to
    # continue using the current protocol on that connection." Ferryman does not tunnel
    # upgrades yet: the request is an ordinary one, and so is the next.
    Case("9110-7.8-upgrade-ignored",
         b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: foo\r\nConnection: upgrade\r\n"
         b"Content-Length: 5\r\n\r\nhello"
         b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, OPEN, body=b"hello", then=(HELLO,)),
]  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """The stub app behind small limits; keep-alive outlasts the 5 s a CLOSE row waits."""
    with serving(
        STUB,
        "--min-instances", "1",
        "--max-pool-size", "1",
        "--thread-count", "4",
        "--max-body-size", "1k",
        "--max-header-size", "4k",
        "--body-timeout", "2",
        "--keepalive-timeout", "60",
    ) as server:  # fmt: skip
        yield server


def _send(wire: Wire, case: Case) -> Response:
    """Send the row's request; the first final response (after a 100 if ``interim``)."""
    method = "HEAD" if case.request.startswith(b"HEAD ") else "GET"
    if not case.interim:
        wire.send(case.request)
        return wire.read_response(method)
    head, sep, body = case.request.partition(b"\r\n\r\n")
    wire.send(head + sep)
    interim = wire.read_head()
    assert interim.status == 100, f"observed {interim.status} before the body, expected 100"
    wire.send(body)
    return wire.read_response(method)


def _check_environ(resp: Response, expected: Mapping[str, str | None]) -> None:
    env: dict[str, Any] = json.loads(resp.body)
    seen = {key: env.get(key) for key in expected}
    assert seen == dict(expected), f"the app saw {seen}, expected {dict(expected)}"


@pytest.mark.parametrize("case", TABLE, ids=[case.id for case in TABLE])
def test_conformance(server: Server, case: Case) -> None:
    allowed = case.status if isinstance(case.status, tuple) else (case.status,)
    with Wire(server.port, timeout=5) as wire:
        resp = _send(wire, case)
        assert resp.status in allowed, f"observed {resp.status}, expected {case.status}: {resp}"
        if case.env:
            _check_environ(resp, case.env)
        if case.body is not None:
            assert resp.body == case.body, f"observed body {resp.body!r}"
        for body in case.then:
            nxt = wire.read_response()
            assert (nxt.status, nxt.body) == (200, body), f"pipelined: observed {nxt}"
        connection = (resp.header("Connection") or "").lower()
        if case.after == CLOSE:
            if resp.status >= 400:
                assert connection == "close", f"error without Connection: close: {resp.headers}"
            assert wire.closed_within(5), "observed open, expected close"
        else:
            assert connection != "close", f"observed Connection: close, expected open: {resp}"
            assert not wire.buffer, f"unexpected bytes after the response: {bytes(wire.buffer)!r}"
            wire.send(PROBE)
            probe = wire.read_response()
            assert (probe.status, probe.body) == (200, HELLO), f"then GET /: observed {probe}"
