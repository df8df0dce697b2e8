"""Process life cycle: parse flags, listen, announce the URL, stop cleanly on SIGTERM/SIGINT."""
from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time

from aiohttp import web

from testbed.scoring.app import ScoringService
from testbed.scoring.config import ConfigError, Settings, parse_settings

LISTENING = "scoring service listening on "
log = logging.getLogger("testbed.scoring")


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _refuse_when_scheduled(service: ScoringService, runner: web.AppRunner, host: str, port: int,
                                 stop: asyncio.Event) -> None:
    """A `refused` fault: stop listening and drop every open connection, as a dead process would;
    listen on the same port again when the window ends."""
    listening = True
    while not stop.is_set():
        refused = service.faults.state(time.monotonic()).refused_remaining_s > 0
        if refused and listening:
            for site in list(runner.sites):
                await site.stop()
            for connection in runner.server.connections if runner.server else ():
                connection.force_close()
            listening = False
            log.info("refusing connections")
        elif not refused and not listening:
            await web.TCPSite(runner, host, port, backlog=1024).start()
            listening = True
            log.info("listening again")
        try:
            await asyncio.wait_for(stop.wait(), 0.02)
        except asyncio.TimeoutError:
            pass


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT; in-flight requests get a few seconds to finish."""
    service = ScoringService(settings)
    runner = web.AppRunner(service.app(), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, settings.host, settings.port, backlog=1024)
        await site.start()
        port = runner.addresses[0][1]
        service.start_clock()
        log.info("config %s", json.dumps(settings.public()))
        print(LISTENING + _url(settings.host, port), flush=True)
        refuser = asyncio.create_task(_refuse_when_scheduled(service, runner, settings.host, port, stop))
        await stop.wait()
        await refuser
        log.info("stopping")
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"scoring_service: error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings))
    except OSError as exc:  # e.g. the port is taken
        where = f"{settings.host}:{settings.port}"
        print(f"scoring_service: error: cannot listen on {where}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0
