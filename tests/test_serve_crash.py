"""kill -9 of `sidrec serve` while it takes writes: nothing acknowledged is lost (slow: real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from conftest import free_port  # noqa: E402

from sidrec.serve import load_state  # noqa: E402

pytestmark = pytest.mark.slow


def start_server(run, state, port: int, log, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "SIDREC_API_KEY": "k", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    where = [str(run)] if run is not None else []
    proc = subprocess.Popen([sys.executable, "-m", "sidrec", "serve", *where, "--state", str(state), "--port",
                             str(port), "--threads", "1", *extra], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, "the server exited"
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the server did not become ready")


def test_sigkill_under_writes_loses_nothing_acknowledged(item_run, tmp_path):
    state, port = tmp_path / "state", free_port()
    with open(tmp_path / "server.log", "wb") as log:
        proc = start_server(item_run, state, port, log)
        url, acknowledged, stop = f"http://127.0.0.1:{port}", [], threading.Event()

        def writer(w: int) -> None:
            with httpx.Client(base_url=url, headers={"Authorization": "Bearer k"}, timeout=30) as client:
                n = 0
                while not stop.is_set():
                    item_id = f"w{w}-{n}"
                    try:
                        r = client.post("/v1/items", json={"items": [{"item_id": item_id, "title": f"Soap {n}"}]})
                    except httpx.HTTPError:
                        return  # the server died mid-request: not acknowledged
                    if r.status_code == 200:
                        acknowledged.append(item_id)
                    n += 1

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        while len(acknowledged) < 40:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown, no snapshot: only the change log
        proc.wait()
        stop.set()
        for t in threads:
            t.join()
        restarted = start_server(item_run, state, port, log)
        try:
            with httpx.Client(base_url=url, timeout=30) as client:
                for item_id in acknowledged:
                    assert client.get(f"/v1/items/{item_id}").json()["status"] == "active", item_id
                offline = load_state(state)  # the final snapshot + the replayed log, in this process
                for history in (acknowledged[:3], acknowledged[-2:], offline.tokenizer.item_ids[:4]):
                    served = client.post("/v1/recommend", json={"history": history, "k": 10}).json()
                    assert [it["item_id"] for it in served["items"]] == [
                        r.item_id for r in offline.recommend(history, k=10)]
        finally:
            restarted.send_signal(signal.SIGTERM)
            restarted.wait(60)


def test_sidrec_serve_exits_1_when_its_state_cannot_load(item_run, tmp_path):
    """A second writer of a state folder: `sidrec serve` says why and exits 1 (an app keeps answering 503)."""
    from sidrec.serve.state import CatalogState

    holder = CatalogState.open_writer(tmp_path / "state", run=item_run)
    try:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        done = subprocess.run([sys.executable, "-m", "sidrec", "serve", str(item_run), "--state", str(tmp_path / "state"),
                               "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=120)
    finally:
        holder.close()
    assert done.returncode == 1 and "another server writes" in done.stderr, done.stderr[-2000:]


def test_a_replica_process_follows_the_writer_process(item_run, tmp_path):
    """One writer and one `--read-only` replica, separate processes sharing the state folder."""
    state, wport, rport = tmp_path / "state", free_port(), free_port()
    with open(tmp_path / "writer.log", "wb") as wlog, open(tmp_path / "replica.log", "wb") as rlog:
        writer = start_server(item_run, state, wport, wlog, "--snapshot-every", "3")
        replica = start_server(None, state, rport, rlog, "--read-only", "--follow-ms", "100")
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{wport}", headers={"Authorization": "Bearer k"}) as w, \
                    httpx.Client(base_url=f"http://127.0.0.1:{rport}", headers={"Authorization": "Bearer k"}) as r:
                for n in range(4):  # the third write moves CURRENT: the replica loads the new snapshot
                    added = w.post("/v1/items", json={"items": [{"item_id": f"r{n}", "title": f"Soap {n}"}]})
                    assert added.status_code == 200
                deadline = time.time() + 60
                while r.get("/v1/items/r3").status_code != 200:
                    assert time.time() < deadline, "the replica never saw the writes"
                    time.sleep(0.1)
                history = ["r0", "r3"]
                a, b = (c.post("/v1/recommend", json={"history": history}).json() for c in (w, r))
                assert a["items"] == b["items"] and a["catalog_version"] == b["catalog_version"] == 4
                refused = r.post("/v1/items", json={"items": [{"item_id": "x", "title": "y"}]})
                assert refused.status_code == 403
        finally:
            for proc in (replica, writer):
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
