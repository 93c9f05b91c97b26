"""Load test of ``sidrec serve``: throughput and latency under concurrent clients, and a crash check.

    python benchmarks/serve_load.py --run runs/qs2 [--duration 20] [--concurrency 1,8,32,64] [--threads 2]
    python benchmarks/serve_load.py --run runs/qs2 --duration 2 --concurrency 1,8 --no-crash   # a smoke run

Starts ``sidrec serve RUN --state STATE`` as a subprocess on a fresh state folder in a temp folder (its log
is there; ``--keep`` keeps the folder) and drives it over HTTP with ``httpx``. Requests: ``POST
/v1/recommend`` (k=10) with a history drawn from ``--users`` seeded test-split users of RUN, and, with
probability ``--write-share``, a single-item ``POST /v1/items`` (a real title, brand and categories of the
catalog under a fresh ``bench-<uuid>`` id). Any non-2xx answer or failed request is an error.

Rows. Closed loop: c workers each send requests back to back for ``--duration`` s after a 2 s warm-up that is
not counted; req/s = 2xx answers completed in the window / duration; p50/p95/p99 of the 2xx reads; add p99
of the 2xx writes. Every ``--concurrency`` row runs with batching on (``--max-batch``), then the server is
restarted with ``--max-batch 1`` (batching off) for the reference row (32 clients; every row with
``--full-off``). Fixed rate (open loop, batching on): request i is sent at ``t0 + i / rate`` by its own task
(at most 1024 in flight) and its latency runs from that scheduled time, so queueing in a slow server (or
client) is counted rather than hidden (no coordinated omission); ``--rate`` defaults to 70% of the closed-
loop req/s at 32 clients. Crash (unless ``--no-crash``): a server on a new state folder takes 16 clients at
5% writes for 8 s and is SIGKILLed under load; once restarted on the same folder, every acknowledged add
(200) must answer 200 / active on ``GET /v1/items/{id}``, and for 200 users its answers must equal
``sidrec.serve.load_state(STATE).recommend(...)`` computed here (item ids in order).

Prints a markdown table and ends with ``serve_rps_32=<r> serve_p99_ms_32=<ms> serve_errors=<n>
batching_speedup_32=<x> add_p99_ms=<ms>`` (``crash_lost=<n> crash_mismatched=<n>`` after a crash phase);
when ``--concurrency`` lacks 32 its largest value is the reference and names the keys instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from sidrec.data import CATALOG_FILE, load_catalog
from sidrec.utils.run_folder import RunFolder

K = 10
WARMUP_S = 2.0
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0
OPEN_LOOP_CAP = 1024  # most requests in flight in the fixed-rate row
OPEN_LOOP_CONNECTIONS = 64  # keep-alive connections they share (a request waits for one; that wait counts)
CLIENTS = ("raw", "httpx")  # raw: a minimal keep-alive HTTP/1.1 client, ~10x less client CPU than httpx
RATE_SHARE = 0.7  # the default fixed rate: this share of the closed-loop req/s at the reference concurrency
REFERENCE_CLIENTS = 32
CRASH_CLIENTS, CRASH_WRITE_SHARE, CRASH_LOAD_S, CRASH_CHECK_USERS = 16, 0.05, 8.0, 200
TEXT_FIELDS = ("Title", "Brand", "Categories", "Price", "Description")  # the rendered item text's labels


class BenchError(Exception):
    """A problem to report in one line (bad run folder, a server that does not start), not a bug."""


@dataclass
class Workload:
    """What the clients send: histories of item-id strings and item texts to add."""

    histories: list[list[str]]
    items: list[dict[str, str]]  # title, brand, categories of real catalog items


@dataclass
class Sample:
    """One request: read (recommend) or write (add), when it was sent (or scheduled), answered, and how."""

    kind: str
    sent_at: float
    done_at: float
    status: int  # HTTP status; 0 when the request failed (connection refused, timeout)
    item_id: str | None = None  # the added item's id (writes)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def latency(self) -> float:
        return self.done_at - self.sent_at


@dataclass
class Row:
    mode: str
    clients: str
    batching: bool
    rps: float
    p50: float
    p95: float
    p99: float
    add_p99: float
    errors: int
    total: int
    write_latencies: list[float]


# -- inputs ----------------------------------------------------------------------------------------------
def field(text: str, label: str) -> str:
    """``label``'s value in a rendered item text (``Title: ...; Brand: ...; Categories: ...``), else ''."""
    others = "|".join(TEXT_FIELDS)
    m = re.search(rf"(?:^|; ){label}: (.*?)(?=; (?:{others}): |$)", text)
    return m.group(1).strip() if m else ""


def load_workload(run: Path, users: int, seed: int) -> Workload:
    """``users`` seeded test-split histories (item-id strings) and the catalog's active items' texts."""
    try:
        ds = RunFolder(run).dataset()
        split = ds.eval_split("test").sample(users, seed=seed)
        ids, titles, removed = load_catalog(run / CATALOG_FILE)
    except (ValueError, OSError) as e:
        raise BenchError(f"cannot read {run} as a prepared run folder: {e}") from e
    histories = [[ds.item_ids[i] for i in h] for h in split.histories if len(h)]
    texts = dict(zip(ds.item_ids, ds.item_texts, strict=True))
    gone = set(removed)
    items: list[dict[str, str]] = []
    for iid, title in zip(ids, titles, strict=True):
        if iid not in gone:
            text = texts.get(iid, "")
            items.append({"title": title or field(text, "Title") or f"item {iid}",
                          "brand": field(text, "Brand"), "categories": field(text, "Categories")})
    if not histories or not items:
        raise BenchError(f"{run} has no test histories or no active catalog items to send")
    return Workload(histories=histories, items=items)


def parse_concurrency(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated client counts, got {text!r}") from e
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"client counts must be >= 1, got {text!r}")
    return values


# -- the server ------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``sidrec serve`` as a subprocess: start, wait for ``/readyz``, SIGTERM (then SIGKILL) or SIGKILL."""

    def __init__(self, args: argparse.Namespace, state: Path, log: Path, *, max_batch: int, key: str) -> None:
        self.port = args.port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.cmd = [sys.executable, "-m", "sidrec", "serve", str(args.run), "--state", str(state),
                    "--host", "127.0.0.1", "--port", str(self.port), "--max-batch", str(max_batch),
                    "--max-wait-ms", f"{args.max_wait_ms:g}", "--threads", str(args.threads)]
        self.env = dict(os.environ, SIDREC_API_KEY=key, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                        TOKENIZERS_PARALLELISM="false")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)  # Ctrl-C here reaches it through stop()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Seconds until ``GET /readyz`` answered 200; ``BenchError`` (with the log's path) otherwise."""
        t0 = time.perf_counter()
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            while time.perf_counter() - t0 < timeout:
                if self.proc is None or self.proc.poll() is not None:
                    code = None if self.proc is None else self.proc.returncode
                    raise BenchError(f"the server exited (code {code}) before it was ready; log: {self.log}"
                                     + self.log_tail())
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/readyz").status_code == 200:
                        return time.perf_counter() - t0
                time.sleep(0.25)
        raise BenchError(f"the server was not ready after {timeout:.0f} s; log: {self.log}" + self.log_tail())

    def log_tail(self, lines: int = 8) -> str:
        with contextlib.suppress(OSError):
            tail = self.log.read_text(errors="replace").splitlines()[-lines:]
            return "".join(f"\n    {line}" for line in tail)
        return ""

    def kill(self) -> None:
        """SIGKILL, no snapshot: what a crash leaves behind."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM (the server snapshots on shutdown) and wait; SIGKILL after ``STOP_TIMEOUT_S``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"the server did not stop {STOP_TIMEOUT_S:.0f} s after SIGTERM; killing it", flush=True)
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def serving(args: argparse.Namespace, tmp: Path, state: Path, label: str, *, max_batch: int, key: str,
            probe: list[str]) -> Iterator[Server]:
    """A ready server on ``state`` (log ``tmp/server-<label>.log``), stopped with SIGTERM on the way out.

    Three ``probe`` recommendations are timed once it is ready, and printed: a server whose first answers are
    slow (lazy set-up after ``/readyz``) shows it there rather than only in the first row.
    """
    state.mkdir(parents=True, exist_ok=True)
    server = Server(args, state, tmp / f"server-{label}.log", max_batch=max_batch, key=key)
    server.start()
    try:
        ready = server.wait_ready()
        print(f"server ({label}, max-batch {max_batch}) ready in {ready:.1f} s at {server.url}; "
              f"first answers in {first_answers(server.url, probe)} ms", flush=True)
        yield server
    finally:
        server.stop()


def first_answers(url: str, history: list[str], n: int = 3) -> str:
    """Latencies (ms) of ``n`` sequential recommendations for ``history``, as text ("failed": an error)."""
    out = []
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        for _ in range(n):
            t0 = time.perf_counter()
            try:
                ok = client.post("/v1/recommend", json=recommend_body(history)).status_code == 200
            except httpx.HTTPError:
                ok = False
            out.append(f"{1e3 * (time.perf_counter() - t0):.0f}" if ok else "failed")
    return ", ".join(out)


# -- requests --------------------------------------------------------------------------------------------
def recommend_body(history: list[str]) -> dict[str, Any]:
    return {"history": history, "k": K, "exclude_seen": True, "cold_share": 0.0, "on_unknown": "error"}


def draw_request(rng: random.Random, workload: Workload, key: str, write_share: float) -> tuple:
    """(kind, path, json body, headers, added id): a write with probability ``write_share``, else a read."""
    if rng.random() < write_share:
        item_id = f"bench-{uuid.uuid4().hex}"
        item = {"item_id": item_id, **rng.choice(workload.items)}
        return "write", "/v1/items", {"items": [item]}, {"Authorization": f"Bearer {key}"}, item_id
    return "read", "/v1/recommend", recommend_body(rng.choice(workload.histories)), None, None


async def send(client: httpx.AsyncClient, request: tuple, sent_at: float | None = None) -> Sample:
    """POST ``request``; latency from ``sent_at`` (the scheduled time) when given, else from now."""
    kind, path, body, headers, item_id = request
    start = time.perf_counter() if sent_at is None else sent_at
    try:
        status = (await client.post(path, json=body, headers=headers)).status_code
    except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
            asyncio.TimeoutError):
        status = 0
    return Sample(kind, start, time.perf_counter(), status, item_id)


async def worker(client: httpx.AsyncClient, workload: Workload, rng: random.Random, *, end: float, key: str,
                 write_share: float, out: list[Sample]) -> None:
    """Requests back to back until ``end`` (perf_counter), each sample appended to ``out``."""
    while time.perf_counter() < end:
        out.append(await send(client, draw_request(rng, workload, key, write_share)))


CLIENT = {"kind": "raw"}  # set from --client


def new_client(url: str, connections: int) -> Any:
    if CLIENT["kind"] == "raw":
        return RawClient(url, connections)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S, limits=limits)


@dataclass
class _Answer:
    status_code: int


class RawClient:
    """A minimal HTTP/1.1 client over a pool of keep-alive asyncio connections: only POST with a JSON body and
    a Content-Length answer (what ``sidrec serve`` sends). The clients share the server's 2 cores, so their own
    CPU cost is part of what is measured: httpx spends about 1.7 ms of CPU per request here, this about 0.2."""

    def __init__(self, url: str, connections: int) -> None:
        host_port = url.split("://", 1)[1].rstrip("/")
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.free: asyncio.Queue = asyncio.Queue()
        self.slots = asyncio.Semaphore(connections)
        self.open: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for writer in self.open:
            writer.close()

    async def post(self, path: str, *, json: Any, headers: dict[str, str] | None = None) -> _Answer:
        import json as _json

        body = _json.dumps(json).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        request = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n{head}\r\n").encode() + body
        async with self.slots:
            reader, writer = self.free.get_nowait() if not self.free.empty() else await self._connect()
            try:
                writer.write(request)
                status = await asyncio.wait_for(self._read_answer(reader), REQUEST_TIMEOUT_S)
            except BaseException:
                writer.close()
                raise
            self.free.put_nowait((reader, writer))
        return _Answer(status)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.open.append(writer)
        return reader, writer

    @staticmethod
    async def _read_answer(reader: asyncio.StreamReader) -> int:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next((int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")), 0)
        await reader.readexactly(length)
        return int(lines[0].split()[1])


async def closed_loop(url: str, workload: Workload, *, clients: int, duration: float, key: str,
                      write_share: float, seed: int) -> list[Sample]:
    """``clients`` workers for warm-up + ``duration`` s; the samples completed after the warm-up."""
    out: list[Sample] = []
    async with new_client(url, clients + 8) as client:
        start = time.perf_counter()
        end = start + WARMUP_S + duration
        await asyncio.gather(*(worker(client, workload, random.Random(seed * 1_000_003 + w), end=end, key=key,
                                      write_share=write_share, out=out) for w in range(clients)))
    return [s for s in out if start + WARMUP_S <= s.done_at <= end]


async def open_loop(url: str, workload: Workload, *, rate: float, duration: float, key: str,
                    write_share: float, seed: int) -> tuple[list[Sample], float]:
    """Request i sent at ``t0 + i / rate`` by its own task; the samples scheduled after the warm-up, and the
    window's start (latency runs from the scheduled time, so waiting for a free slot counts too)."""
    rng, cap = random.Random(seed), asyncio.Semaphore(OPEN_LOOP_CAP)
    out: list[Sample] = []
    tasks: set[asyncio.Task] = set()

    async def scheduled(request: tuple, at: float) -> None:
        async with cap:
            out.append(await send(client, request, sent_at=at))

    async with new_client(url, OPEN_LOOP_CONNECTIONS) as client:
        t0 = time.perf_counter() + 0.05
        for i in range(int((WARMUP_S + duration) * rate)):
            at = t0 + i / rate
            request = draw_request(rng, workload, key, write_share)
            if (delay := at - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(scheduled(request, at))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*list(tasks))
    window = t0 + WARMUP_S
    return [s for s in out if window <= s.sent_at < window + duration], window


# -- rows ------------------------------------------------------------------------------------------------
def ms(latencies: list[float], q: float) -> float:
    return float(np.percentile(latencies, q) * 1e3) if latencies else math.nan


def summarize(samples: list[Sample], *, mode: str, clients: str, batching: bool, seconds: float) -> Row:
    """req/s of the 2xx answers over ``seconds``; percentiles (ms) of the 2xx reads and writes; errors."""
    reads = [s.latency for s in samples if s.ok and s.kind == "read"]
    writes = [s.latency for s in samples if s.ok and s.kind == "write"]
    errors = sum(not s.ok for s in samples)
    return Row(mode, clients, batching, (len(reads) + len(writes)) / seconds, ms(reads, 50), ms(reads, 95),
               ms(reads, 99), ms(writes, 99), errors, len(samples), writes)


def closed_row(server: Server, workload: Workload, args: argparse.Namespace, *, clients: int, batching: bool,
               key: str) -> Row:
    print(f"closed loop: {clients} clients, batching {'on' if batching else 'off'}, "
          f"{WARMUP_S:g} + {args.duration:g} s ...", flush=True)
    samples = asyncio.run(closed_loop(server.url, workload, clients=clients, duration=args.duration, key=key,
                                      write_share=args.write_share, seed=args.seed * 1000 + clients))
    return summarize(samples, mode="closed loop", clients=str(clients), batching=batching,
                     seconds=args.duration)


def fixed_rate_row(server: Server, workload: Workload, args: argparse.Namespace, *, rate: float,
                   key: str) -> Row:
    """The open-loop row; its req/s is what was answered (2xx) over the time the window's requests took."""
    print(f"fixed rate: {rate:.1f} req/s, {WARMUP_S:g} + {args.duration:g} s ...", flush=True)
    samples, window = asyncio.run(open_loop(server.url, workload, rate=rate, duration=args.duration, key=key,
                                            write_share=args.write_share, seed=args.seed))
    seconds = max(args.duration, max((s.done_at for s in samples), default=window) - window)
    return summarize(samples, mode=f"fixed rate {rate:.1f}/s", clients="open", batching=True, seconds=seconds)


def load_rows(args: argparse.Namespace, workload: Workload, tmp: Path, key: str, ref: int) -> list[Row]:
    """Every concurrency with batching on, the fixed-rate row, then the batching-off row(s)."""
    rows: list[Row] = []
    state = tmp / "state"
    with serving(args, tmp, state, "batching-on", max_batch=args.max_batch, key=key,
                 probe=workload.histories[0]) as server:
        for clients in args.concurrency:
            rows.append(closed_row(server, workload, args, clients=clients, batching=True, key=key))
        measured = next(r.rps for r in rows if r.clients == str(ref))
        rate = args.rate if args.rate else RATE_SHARE * measured
        if rate > 0:
            rows.append(fixed_rate_row(server, workload, args, rate=rate, key=key))
        else:
            print(f"no fixed-rate row: nothing was answered at {ref} clients", flush=True)
    with serving(args, tmp, state, "batching-off", max_batch=1, key=key,
                 probe=workload.histories[0]) as server:
        for clients in args.concurrency if args.full_off else [ref]:
            rows.append(closed_row(server, workload, args, clients=clients, batching=False, key=key))
    return rows


# -- the crash phase -------------------------------------------------------------------------------------
async def crash_load(server: Server, workload: Workload, key: str, seed: int) -> list[Sample]:
    """16 clients at 5% writes; SIGKILL the server after ``CRASH_LOAD_S`` s under load, then stop them."""
    out: list[Sample] = []
    async with new_client(server.url, CRASH_CLIENTS + 8) as client:
        tasks = [asyncio.create_task(worker(client, workload, random.Random(seed * 7_919 + w), end=math.inf,
                                            key=key, write_share=CRASH_WRITE_SHARE, out=out))
                 for w in range(CRASH_CLIENTS)]
        await asyncio.sleep(CRASH_LOAD_S)
        server.kill()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return out


def count_lost(url: str, item_ids: list[str]) -> int:
    """Acknowledged adds that do not answer 200 with status ``active`` on ``GET /v1/items/{id}``."""
    lost = 0
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        for item_id in item_ids:
            try:
                resp = client.get(f"/v1/items/{item_id}")
                lost += resp.status_code != 200 or resp.json().get("status") != "active"
            except (httpx.HTTPError, ValueError):
                lost += 1
    return lost


def count_mismatched(url: str, state: Path, histories: list[list[str]]) -> int:
    """Histories whose served top-k (ids in order) differs from ``load_state(state).recommend`` computed here.

    Requests go one at a time (each is a batch of one in the server, as here). torch and ``sidrec.serve``
    are imported only now: the load-generating process stays light.
    """
    served: list[list[str] | None] = []
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        for history in histories:
            try:
                resp = client.post("/v1/recommend", json=recommend_body(history))
                ok = resp.status_code == 200
                served.append([it["item_id"] for it in resp.json()["items"]] if ok else None)
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                served.append(None)
    import torch

    from sidrec.serve import load_state

    torch.set_num_threads(1)
    rec = load_state(state)
    local = [[r.item_id for r in rec.recommend(history, k=K, exclude_seen=True)] for history in histories]
    return sum(a != b for a, b in zip(served, local, strict=True))


def crash_phase(args: argparse.Namespace, workload: Workload, tmp: Path, key: str) -> tuple[int, int, int]:
    """(acknowledged, lost, mismatched): a SIGKILL under load, a restart on the same state, the checks."""
    state = tmp / "state-crash"
    print(f"crash: {CRASH_CLIENTS} clients, {CRASH_WRITE_SHARE:.0%} writes, SIGKILL after {CRASH_LOAD_S:g} "
          "s ...", flush=True)
    with serving(args, tmp, state, "crash", max_batch=args.max_batch, key=key,
                 probe=workload.histories[0]) as server:
        samples = asyncio.run(crash_load(server, workload, key, args.seed))
        if server.proc is not None:
            server.proc.wait()  # reaped: the restart below must not race the dying process for the state
    acked = [s.item_id for s in samples if s.kind == "write" and s.status == 200 and s.item_id]
    with serving(args, tmp, state, "crash-restart", max_batch=args.max_batch, key=key,
                 probe=workload.histories[0]) as server:
        lost = count_lost(server.url, acked)
        mismatched = count_mismatched(server.url, state, workload.histories[:CRASH_CHECK_USERS])
    print(f"acknowledged={len(acked)} lost={lost} mismatched={mismatched}", flush=True)
    if not acked:
        print("note: no add was acknowledged before the kill, so the durability check proved nothing "
              "(a slow or busy machine); rerun on a quieter one", flush=True)
    return len(acked), lost, mismatched


# -- report ----------------------------------------------------------------------------------------------
def print_table(rows: list[Row]) -> None:
    print("\n| mode | clients | batching | req/s (2xx) | p50 ms | p95 ms | p99 ms | add p99 ms | errors |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rate = r.errors / r.total if r.total else 0.0
        print(f"| {r.mode} | {r.clients} | {'on' if r.batching else 'off'} | {r.rps:.1f} | {r.p50:.1f} | "
              f"{r.p95:.1f} | {r.p99:.1f} | {r.add_p99:.1f} | {r.errors} / {r.total} ({rate:.2%}) |")


def summary_line(rows: list[Row], ref: int, crash: tuple[int, int, int] | None) -> str:
    closed_on = [r for r in rows if r.batching and r.mode == "closed loop"]
    on = next(r for r in closed_on if r.clients == str(ref))
    off = next(r for r in rows if not r.batching and r.clients == str(ref))
    errors = sum(r.errors for r in rows if r.batching)
    writes = [w for r in closed_on for w in r.write_latencies]
    speedup = on.rps / off.rps if off.rps else math.nan
    line = (f"serve_rps_{ref}={on.rps:.1f} serve_p99_ms_{ref}={on.p99:.1f} serve_errors={errors} "
            f"batching_speedup_{ref}={speedup:.2f} add_p99_ms={ms(writes, 99):.1f}")
    if crash is not None:
        line += f" crash_lost={crash[1]} crash_mismatched={crash[2]}"
    return line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, type=Path, help="a trained run folder (e.g. runs/qs2)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds counted per row (after a warm-up)")
    p.add_argument("--concurrency", type=parse_concurrency, default=[1, 8, 32, 64],
                   help="clients per row (default 1,8,32,64)")
    p.add_argument("--rate", type=float, default=None,
                   help="fixed-rate row, requests/s (default: 70%% of the closed-loop req/s at 32 clients)")
    p.add_argument("--write-share", type=float, default=0.01, help="share of requests that add an item")
    p.add_argument("--max-batch", type=int, default=64, help="the server's micro-batch when batching is on")
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=1,
                   help="the server's torch threads (1: the other core runs the event loop and the clients)")
    p.add_argument("--client", choices=CLIENTS, default="raw", help="the load generator's HTTP client")
    p.add_argument("--users", type=int, default=2000, help="test-split histories to sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-crash", action="store_true", help="skip the crash phase")
    p.add_argument("--full-off", action="store_true", help="every --concurrency row with batching off too")
    p.add_argument("--port", type=int, default=0, help="the server's port (default: a free one per start)")
    p.add_argument("--keep", action="store_true", help="keep the temp folder (state folders, server logs)")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.users < 1 or args.max_batch < 1 or args.threads < 1:
        p.error("--duration, --users, --max-batch and --threads must be positive")
    if not 0.0 <= args.write_share <= 1.0:
        p.error(f"--write-share must be in [0, 1], got {args.write_share}")
    if args.rate is not None and args.rate <= 0:
        p.error(f"--rate must be positive, got {args.rate}")
    if not args.run.is_dir():
        p.error(f"--run {args.run} is not a folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    CLIENT["kind"] = args.client
    ref = REFERENCE_CLIENTS if REFERENCE_CLIENTS in args.concurrency else max(args.concurrency)
    try:
        workload = load_workload(args.run, args.users, args.seed)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"run {args.run}: {len(workload.histories)} test histories (seed {args.seed}), "
          f"{len(workload.items)} catalog texts for adds; {args.write_share:.1%} writes; machine: "
          f"{os.cpu_count()} CPUs, server torch threads {args.threads}, max-batch {args.max_batch}, "
          f"max-wait {args.max_wait_ms:g} ms", flush=True)
    if ref != REFERENCE_CLIENTS:
        print(f"note: --concurrency lacks {REFERENCE_CLIENTS}; {ref} clients is the reference row",
              flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="sidrec-serve-load-"))
    keep = args.keep
    try:
        rows = load_rows(args, workload, tmp, secrets.token_hex(16), ref)
        crash = None if args.no_crash else crash_phase(args, workload, tmp, secrets.token_hex(16))
    except BenchError as e:
        keep = True
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        keep = True
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if keep:
            print(f"temp folder kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows)
    print(f"\nmachine: {os.cpu_count()} CPUs (clients and server share them), client {args.client}; server torch threads "
          f"{args.threads}; {args.duration:g} s per row after {WARMUP_S:g} s of warm-up")
    if crash is not None:
        print(f"crash: acknowledged={crash[0]} lost={crash[1]} mismatched={crash[2]}")
    print("\n" + summary_line(rows, ref, crash))
    return 0


if __name__ == "__main__":
    sys.exit(main())
