"""The gRPC server: warm start, readiness line, clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time

import grpc

from thaw.engine.v1 import engine_service_pb2_grpc

from .service import EngineServicer, event_dispatcher
from .worker import Worker, WorkerOptions

log = logging.getLogger("thaw_engine.server")

_MAX_MESSAGE = 256 << 20


async def serve(socket_path: str, options: WorkerOptions, grace_seconds: float = 2.0) -> int:
    """Serves EngineService on a unix socket until SIGTERM/SIGINT; returns the exit status."""
    t0 = time.perf_counter()
    worker = Worker(options, dispatch=event_dispatcher(asyncio.get_running_loop()))
    worker.start()
    info = worker.warm_up()
    servicer = EngineServicer(worker)
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", _MAX_MESSAGE), ("grpc.max_send_message_length", _MAX_MESSAGE)]
    )
    engine_service_pb2_grpc.add_EngineServiceServicer_to_server(servicer, server)
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    os.makedirs(os.path.dirname(os.path.abspath(socket_path)), exist_ok=True)
    if server.add_insecure_port(f"unix:{socket_path}") == 0:
        log.error("cannot listen on %s", socket_path)
        return 1
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready = {"event": "ready", "socket": socket_path, "pid": os.getpid(), "seconds": round(time.perf_counter() - t0, 3), **info}
    log.info("ready on %s (%s)", socket_path, ", ".join(f"{k}={v}" for k, v in info.items()))
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    await stop.wait()
    log.info("shutting down")
    # the engine first: open Generate streams end with FINISH_REASON_ABORT instead of waiting out the grace
    await asyncio.to_thread(worker.shutdown)
    await server.stop(grace_seconds)
    try:
        os.unlink(socket_path)
    except FileNotFoundError:
        pass
    log.info("stopped")
    return 0
