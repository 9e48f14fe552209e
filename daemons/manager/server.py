"""Running the manager: HTTPS on the one configured address and port, until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from natt_daemons.common import sdnotify
from natt_daemons.manager.app import create_app
from natt_daemons.manager.config import ManagerSettings, load
from natt_daemons.manager.tls import Certificate, configured, self_signed, server_context

log = logging.getLogger("natt.manager")


def certificate(settings: ManagerSettings) -> Certificate:
    if settings.tls_cert is not None and settings.tls_key is not None:
        return configured(settings.tls_cert, settings.tls_key)
    return self_signed(settings.state_dir, settings.address)


class ManagerServer:
    """The application behind a TLS site; `start` binds, `stop` ends the open connections and unbinds."""

    def __init__(self, settings: ManagerSettings, app: web.Application | None = None) -> None:
        self.settings = settings
        self.app = app or create_app(settings)
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        self.cert: Certificate | None = None
        self.port = settings.port

    async def start(self) -> None:
        self.cert = certificate(self.settings)
        ctx = server_context(self.cert)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.settings.address, self.settings.port, ssl_context=ctx,
                           reuse_address=True, backlog=64)
        await site.start()
        self.port = self.runner.addresses[0][1]  # the bound port, when the config says 0 (tests)
        host = f"[{self.settings.address}]" if ":" in self.settings.address else self.settings.address
        log.info("listening on https://%s:%d/ (certificate %s, %s; SHA-256 %s); concentrator at %s", host, self.port,
                 self.cert.cert, "self-signed" if self.cert.self_signed else "configured", self.cert.fingerprint,
                 self.settings.control_socket)

    async def stop(self) -> None:
        await self.runner.cleanup()


async def run(settings: ManagerSettings) -> None:
    server = ManagerServer(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    sdnotify.ready(f"listening on {settings.url}")
    await stop.wait()
    sdnotify.stopping()
    await server.stop()
    log.info("stopped")


def serve(config: str) -> int:
    settings = load(config)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(settings))
    return 0
