"""The server in this process, for notebooks, tests and benchmarks.

BackgroundServer(app)   uvicorn in a daemon thread on a free loopback port; `.url`, `.stop()`
headless_chromium()     Debian's chromium through chromium-driver (/usr/bin), headless, for the
                        playground's browser test and screenshot (never a downloaded browser)
"""

from __future__ import annotations

import socket
import threading
import time

from steerable.errors import SteerableError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BackgroundServer:
    """uvicorn serving `app` in a thread, on a free loopback port."""

    def __init__(self, app, timeout: float = 30):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
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
