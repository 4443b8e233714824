"""`thinghub edge`: the iTwin IoT Edge API on a Linux gateway, a device client of a thinghub cloud.

A separate program in the package: it reaches the cloud only over the wire (MQTT/TLS as a
gateway with one module per port), never through the cloud's services or storage.
"""

from .config import EdgeConfigError, EdgeSettings, load_edge_settings
from .runtime import Edge, write_ready_file

__all__ = ["Edge", "EdgeConfigError", "EdgeSettings", "load_edge_settings", "run_edge"]


async def run_edge(settings: EdgeSettings) -> None:
    """Run until SIGTERM or SIGINT; print `thinghub-edge ready {json}` once listening."""
    import asyncio
    import json
    import logging
    import signal

    logger = logging.getLogger(__name__)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Edge(settings) as edge:
        text = json.dumps(edge.addresses, separators=(",", ":"))
        if settings.ready_file is not None:
            write_ready_file(settings.ready_file, text)
        print(f"thinghub-edge ready {text}", flush=True)
        await stop.wait()
        logger.info("shutting down")
    logger.info("stopped")
