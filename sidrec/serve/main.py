"""``sidrec serve``: argument parsing and uvicorn (one process, one worker thread owns the model)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
from pathlib import Path

logger = logging.getLogger("sidrec.serve")

LOOPBACK_NAMES = ("localhost",)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sidrec serve", description="Serve a trained run over HTTP (OpenAPI page at /docs).",
        epilog="Keys: SIDREC_API_KEY (writes), SIDREC_READ_KEY (reads, optional). With no SIDREC_API_KEY, writes "
               "are accepted only on a loopback address. Writer: sidrec serve runs/quickstart; replica: sidrec "
               "serve --read-only --state runs/quickstart.serving")
    p.add_argument("run", nargs="?", type=Path, help="the trained run folder (needed the first time a state "
                   "folder is created)")
    p.add_argument("--state", type=Path, help="snapshots + change log (default: RUN.serving beside the run)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=64, help="histories per batched call (1 = batching off)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long to wait to fill a batch")
    p.add_argument("--queue-size", type=int, default=1024, help="waiting requests before answering 503")
    p.add_argument("--snapshot-every", type=int, default=1000, help="writes between snapshots")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: all cores but one, which the event loop needs; measured on 2 "
                        "cores: 1 thread served 30%% more requests/s than 2)")
    p.add_argument("--read-only", action="store_true", help="a replica: follow --state, refuse writes (403)")
    p.add_argument("--follow-ms", type=float, default=500.0, help="a replica's polling interval")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import uvicorn

        from sidrec.serve.app import create_app
        from sidrec.serve.server import ServeSettings
        from sidrec.serve.state import default_state_dir
    except ImportError as e:
        raise ValueError(f"`sidrec serve` needs the 'serve' extra ({e.name} is missing): "
                         "pip install 'sidrec[serve]'") from e
    if args.run is None and args.state is None:
        raise ValueError("give the trained run folder (sidrec serve RUN), or --state of a writer's state folder")
    if args.run is not None and not args.run.is_dir():
        raise ValueError(f"{args.run} is not a folder; give a trained run folder (e.g. runs/quickstart)")
    import os

    import torch

    threads = args.threads or max(1, (os.cpu_count() or 2) - 1)
    if threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    settings = ServeSettings.from_env(
        state_dir=args.state or default_state_dir(args.run), run=args.run, read_only=args.read_only,
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, queue_size=args.queue_size,
        snapshot_every=args.snapshot_every, max_body_bytes=args.max_body_bytes, follow_interval_s=args.follow_ms / 1000,
        loopback_only=is_loopback(args.host), exit_on_load_error=True)
    _say_keys(settings, args.host)
    logger.info("state folder %s%s; %d torch thread(s), max batch %d, max wait %g ms", settings.state_dir,
                " (read-only replica)" if settings.read_only else "", threads, settings.max_batch,
                settings.max_wait_ms)
    app = create_app(settings=settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                timeout_graceful_shutdown=30)
    return 0


def _say_keys(settings, host: str) -> None:
    if settings.read_only:
        logger.info("read-only replica: writes answer 403")
    elif settings.api_key is None and settings.loopback_only:
        logger.warning("SIDREC_API_KEY is not set: writes are accepted without a key because the server listens on "
                       "loopback only (%s)", host)
    elif settings.api_key is None:
        logger.warning("SIDREC_API_KEY is not set and the server listens on %s: writes are refused (403); set "
                       "SIDREC_API_KEY to accept them", host)
    if settings.read_key is None:
        logger.info("reads are open (set SIDREC_READ_KEY to require a key)")
