"""`thinghub edge` store-and-forward throughput (not a test): accept a burst, then drain it.

`python -m bench.edge_queue [--lines N]` starts a real cloud (`thinghub serve`) and a real
edge (simulated board) on ephemeral ports with a pty as the instrument, turns the cloud link
off, writes N lines at once and times until every line is committed to the edge's queue
(accepted), then turns the link on and times until the cloud has acknowledged every one
(drained, one module, `cloud.max_inflight` 16).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tests.e2e.edge import EdgeProcess, Instrument, edge_toml, gateway_with_module
from tests.e2e.server import ServerProcess

__all__ = ["main"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=10_000)
    lines = parser.parse_args().lines
    with tempfile.TemporaryDirectory() as tmp:
        cloud = ServerProcess(Path(tmp) / "cloud").start()
        instrument = Instrument()
        edge: EdgeProcess | None = None
        try:
            with cloud.client() as client:
                gateway = gateway_with_module(client)
            edge = EdgeProcess(Path(tmp) / "edge", cloud, gateway, edge_toml(instrument, gateway))
            edge.start()
            edge.wait_status(
                lambda s: s["ports"]["1"]["open"] and s["cloud"]["connected"].get("port1")
            )
            with edge.client() as api:
                api.put("/api/cloudConnection", json={"value": False})
            burst = b"".join(f"T={i}\r\n".encode() for i in range(lines))
            start = time.monotonic()
            instrument.write(burst)
            edge.wait_status(lambda s: s["queue"]["accepted"] == lines, 600)
            accepted = time.monotonic()
            with edge.client() as api:
                api.put("/api/cloudConnection", json={"value": True})
            edge.wait_status(lambda s: s["queue"]["sent"] == lines, 600)
            drained = time.monotonic()
        finally:
            if edge is not None:
                edge.stop()
            instrument.close()
            cloud.stop()
    accept_s, drain_s = accepted - start, drained - accepted
    print(f"lines {lines}: accepted in {accept_s:.2f} s ({lines / accept_s:,.0f}/s), "
          f"drained to the cloud in {drain_s:.2f} s ({lines / drain_s:,.0f}/s)")  # fmt: skip


if __name__ == "__main__":
    main()
