"""Running the service under uvicorn, with one or several worker processes."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import uvicorn
from anymodal.service.settings import Settings


def run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT. Workers read their settings from the environment, so the caller
    puts any overrides there first. Several workers share one metrics directory; each runs its own
    gRPC server (`service/grpc_server.py`), all bound to the gRPC port with SO_REUSEPORT."""
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        folder = tempfile.mkdtemp(prefix="anymodal-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    uvicorn.run(
        "anymodal.service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=settings.access_log,
        http="anymodal.service.connections:GuardedHttpToolsProtocol",
        # On SIGTERM uvicorn stops listening and closes idle connections at once; requests in
        # flight get this long to finish (`service/shutdown.py`). A float works: it is a timeout.
        timeout_graceful_shutdown=settings.drain_seconds,  # type: ignore[arg-type]
    )
