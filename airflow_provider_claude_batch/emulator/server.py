"""Run the emulator: in a background thread on a free loopback port (tests), or in the foreground (CLI)."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from typing import TYPE_CHECKING

import uvicorn

from airflow_provider_claude_batch.emulator.app import Emulator
from airflow_provider_claude_batch.emulator.control import EmulatorControl
from airflow_provider_claude_batch.emulator.store import BatchStore, EmulatorConfig

if TYPE_CHECKING:
    from types import TracebackType


def _uvicorn_config(emulator: Emulator, log_level: str) -> uvicorn.Config:
    # No keep-alive timeout games: clients such as the SDK pool connections.
    return uvicorn.Config(
        emulator.app,
        lifespan="off",
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=30,
    )


class EmulatorServer:
    """An in-process emulator on 127.0.0.1, started and stopped by a context manager.

    >>> with EmulatorServer(EmulatorConfig(processing_seconds=0.5)) as emu:
    ...     client = anthropic.Anthropic(base_url=emu.url, api_key=emu.api_key)
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        control_token: str | None = None,
    ) -> None:
        # A token of its own, so the control routes keep working when a test changes or drops the key.
        self.control_token = control_token or secrets.token_urlsafe(24)
        self.emulator = Emulator(BatchStore(config), self.control_token)
        self._host = host
        self._port = port
        self._server = uvicorn.Server(_uvicorn_config(self.emulator, log_level))
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The base URL to give the SDK (`base_url`) or a connection's host."""
        return f"http://{self._host}:{self.port}"

    @property
    def api_key(self) -> str:
        """The key clients must send (any key when the emulator accepts any)."""
        return self.emulator.store.config.api_key or "any-key"

    @property
    def control(self) -> EmulatorControl:
        """A control client holding this server's own token."""
        return EmulatorControl(self.url, self.control_token)

    def start(self) -> EmulatorServer:
        """Bind a free port (or the one asked for) and serve in a daemon thread until `stop()`."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name="claude-batch-emulator",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the emulator did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Ask the server to exit and wait for its thread."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve_forever(
    config: EmulatorConfig, host: str, port: int, log_level: str = "info", control_token: str | None = None
) -> None:
    """Serve in the foreground until interrupted (the CLI's entry point)."""
    server = uvicorn.Server(
        uvicorn.Config(
            Emulator(BatchStore(config), control_token).app,
            host=host,
            port=port,
            lifespan="off",
            log_level=log_level,
            access_log=log_level == "debug",
        )
    )
    server.run()
