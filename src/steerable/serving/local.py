"""Running the server: uvicorn with the limits `steerable serve` sets, and the server in this
process for notebooks, tests and benchmarks.

uvicorn_config(app, ...)  uvicorn's settings: `limit_concurrency` (over it, a 503 in OpenAI's
                        body with Retry-After), `timeout_keep_alive`, and `read_timeout`, which
                        uvicorn lacks: a request's header and body must arrive within it
                        (`ReadTimeoutH11Protocol`)
listening_socket(h, p)  the socket `serve` binds before loading its models (a taken port or a
                        host that does not resolve is refused at once)
BackgroundServer(app)   uvicorn in a daemon thread on a free loopback port; `.url`, `.stop()`
headless_chromium()     Debian's chromium through chromium-driver (/usr/bin), headless, for the
                        playground's browser test and screenshot (never a downloaded browser)
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import socket
import threading
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from steerable.errors import SteerableError
from steerable.serving.protocol import ApiError

LIMIT_CONCURRENCY = 512  # connections and requests at once; over it, 503
TIMEOUT_KEEP_ALIVE = 5  # seconds an idle kept-alive connection stays open (uvicorn's default)
READ_TIMEOUT = 30.0  # seconds a request's header and body may take to arrive


def error_body(status: int, message: str) -> bytes:
    """OpenAI's error body, for answers given before the app sees the request."""
    return json.dumps(ApiError(status, message).body()).encode()


class ReadTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with two things it lacks.

    A read timeout: uvicorn times out idle kept-alive connections but waits forever for a request
    whose header or body never finishes (a slowloris client holds its connection, and a file
    descriptor, for good). Here a request must arrive whole within `read_timeout` seconds of its
    connection or its first byte, or the connection is closed (nginx's client_header_timeout and
    client_body_timeout, as one).

    OpenAI's error body for what uvicorn answers itself: the concurrency limit (503, with
    Retry-After, as the queue's) and a request that is not HTTP (400)."""

    def __init__(self, *args, read_timeout: float = READ_TIMEOUT, **kwargs):
        super().__init__(*args, **kwargs)
        self.read_timeout, self.read_timer = read_timeout, None
        self.limit, self.limit_concurrency = self.limit_concurrency, None  # checked in `admit`
        self.app = functools.partial(self.admit, self.app)

    async def admit(self, app, scope, receive, send) -> None:
        """`app`, unless more connections or requests than the limit are open (uvicorn's rule;
        this request's own task is already counted)."""
        if self.limit is None or (len(self.connections) < self.limit and len(self.tasks) <= self.limit):
            return await app(scope, receive, send)
        self.logger.warning("Exceeded concurrency limit.")
        body = error_body(503, "the server is at its concurrency limit; retry shortly")
        headers = [(b"content-type", b"application/json"), (b"retry-after", b"1"), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.watch_reading()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.watch_reading()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # a pipelined request's header, read only now, may leave its body still to come
        self.watch_reading()

    def watch_reading(self) -> None:
        """A timer while a request is arriving (none yet, or its header or body unfinished)."""
        arriving = self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing()
        if arriving and self.read_timer is None:
            self.read_timer = self.loop.call_later(self.read_timeout, self.read_timed_out)
        elif not arriving and self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def read_timed_out(self) -> None:
        self.read_timer = None
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self.transport.close()  # the app, if it waits for the body, sees the client gone

    def connection_lost(self, exc: Exception | None) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=error_body(400, f"{msg} (not an HTTP/1.1 request uvicorn can read)")),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()


def uvicorn_config(
    app,
    host: str = "127.0.0.1",
    port: int = 8000,
    limit_concurrency: int = LIMIT_CONCURRENCY,
    timeout_keep_alive: int = TIMEOUT_KEEP_ALIVE,
    read_timeout: float = READ_TIMEOUT,
):
    """uvicorn's settings for serving `app`: its h11 protocol with the read timeout, its
    concurrency limit and its keep-alive timeout."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=functools.partial(ReadTimeoutH11Protocol, read_timeout=read_timeout),
        limit_concurrency=limit_concurrency,
        timeout_keep_alive=timeout_keep_alive,
        log_level="warning",
    )


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to `host`:`port` for uvicorn to serve on; a host that does not resolve or
    a port that is taken is a one-line error naming the option."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:  # UnicodeError: a label over 63 characters
        raise SteerableError(f"--host {host!r} does not resolve ({err}); give an address such as 127.0.0.1")
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's own socket
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise SteerableError(
                f"port {port} is in use on {host}; stop what holds it or choose another --port"
            )
        raise SteerableError(f"cannot listen on {host}:{port} ({err.strerror}); check --host and --port")
    return sock


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BackgroundServer:
    """uvicorn serving `app` in a thread, on a free loopback port (`uvicorn_config`'s settings)."""

    def __init__(self, app, timeout: float = 30, **settings):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", self.port, **settings))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise SteerableError(f"the server did not start on port {self.port}")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def headless_chromium(size: str = "1200,900"):
    """A selenium Chrome driver on Debian's chromium (packages chromium and chromium-driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={size}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
