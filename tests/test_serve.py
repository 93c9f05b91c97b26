"""`sidrec serve` through FastAPI's test client on a tiny hybrid run: endpoints, bad input, keys, replicas,
batching, and the change log / snapshots that make catalog writes survive a restart."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import sidrec  # noqa: E402
from sidrec.serve import create_app, load_state  # noqa: E402
from sidrec.serve.batcher import MicroBatcher, QueueFull, ReadJob  # noqa: E402
from sidrec.serve.changelog import ChangeLog, read_log  # noqa: E402
from sidrec.serve.server import ServeSettings  # noqa: E402
from sidrec.serve.state import CatalogState  # noqa: E402

KEY = "test-key-123"
NEW = {"item_id": "new-1", "title": "Rose Lip Balm", "brand": "Acme", "categories": [["Beauty", "Skin Care", "Lips"]]}


def app_for(run, state, **options):
    settings = ServeSettings(state_dir=state, run=run, **options)
    return create_app(settings=settings, load_in_background=False)


@pytest.fixture()
def client(item_run, tmp_path):
    with TestClient(app_for(item_run, tmp_path / "state", api_key=KEY)) as c:
        yield c


def auth(key: str = KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}


def ids_of(answer: dict) -> list[str]:
    return [it["item_id"] for it in answer["items"]]


def some_histories(rec, n: int = 6) -> list[list[str]]:
    items = rec.tokenizer.item_ids
    return [items[i : i + 1 + i % 4] for i in range(0, 7 * n, 7)][:n]


# -- reads ------------------------------------------------------------------------------------------
def test_recommend_and_batch_equal_sequential_recommender_answers(client, item_run):
    rec = sidrec.Recommender.from_pretrained(item_run)
    histories = some_histories(rec)
    expected = [[r.item_id for r in rec.recommend(h, k=7)] for h in histories]
    for h, want in zip(histories, expected, strict=True):
        answer = client.post("/v1/recommend", json={"history": h, "k": 7}).json()
        assert ids_of(answer) == want and answer["catalog_version"] == 0 and answer["history_used"] == len(h)
    batch = client.post("/v1/recommend/batch", json={"histories": histories, "k": 7}).json()
    assert [ids_of(r) for r in batch["results"]] == expected


def test_concurrent_requests_share_batches_and_equal_sequential_answers(item_run):
    """Requests queued together are answered by one batched call, each with its own answer."""
    rec = sidrec.Recommender.from_pretrained(item_run)
    histories = some_histories(rec, 8)
    expected = [rec.recommend(h, k=5) for h in histories]
    sizes: list[int] = []
    gate = threading.Event()
    batcher = MicroBatcher(recommend=lambda hs, **kw: (rec.recommend(hs, **kw), 0), max_batch=64, max_wait_ms=200,
                           on_batch=sizes.append)
    batcher.call(gate.wait)  # hold the worker while all requests queue up
    futures = [batcher.submit(ReadJob([h], 5 if n < 6 else 3, True, 0.0)) for n, h in enumerate(histories)]
    gate.set()
    answers = [f.result(timeout=30)[0][0] for f in futures]
    batcher.stop()
    assert sizes == [8]  # one batch, two settings inside it (k=5 and k=3): one call per setting
    assert_same(answers[:6], expected[:6])
    assert_same(answers[6:], [e[:3] for e in expected[6:]])


def assert_same(answers: list[list], expected: list[list]) -> None:
    """The same items in the same order; scores equal up to float noise (a padded batch sums in another order)."""
    assert [[r.item_id for r in a] for a in answers] == [[r.item_id for r in e] for e in expected]
    assert all(abs(x.score - y.score) < 1e-4 for a, e in zip(answers, expected, strict=True)
               for x, y in zip(a, e, strict=True))


def test_full_queue_answers_503_with_retry_after(client, item_run):
    server = client.app.state.server
    gate = threading.Event()
    server.batcher.call(gate.wait)  # the worker is busy
    while server.batcher.depth:
        time.sleep(0.01)
    server.batcher._queue.maxsize = 1
    try:
        server.batcher.call(lambda: None)  # the queue is now full
        answer = client.post("/v1/recommend", json={"history": some_histories(server.state.recommender)[0]})
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
        with pytest.raises(QueueFull):
            server.batcher.call(lambda: None)
    finally:
        gate.set()


def test_bad_input_gets_a_clear_status_and_body(item_run, tmp_path):
    with TestClient(app_for(item_run, tmp_path / "s", max_body_bytes=4000)) as c:
        rec = c.app.state.server.state.recommender
        known = rec.tokenizer.item_ids[:3]
        r = c.post("/v1/recommend", json={"history": [known[0], "nope-1", "nope-2"]})
        assert r.status_code == 422 and [u["item_id"] for u in r.json()["detail"]["unknown"]] == ["nope-1", "nope-2"]
        r = c.post("/v1/recommend", json={"history": [known[0], "nope-1"], "on_unknown": "skip"})
        assert r.status_code == 200 and r.json()["skipped_unknown"] == 1 and r.json()["history_used"] == 1
        assert c.post("/v1/recommend", json={"history": ["nope"], "on_unknown": "skip"}).status_code == 422
        assert c.post("/v1/recommend", json={"history": []}).status_code == 422
        r = c.post("/v1/recommend/batch", json={"histories": []})
        assert r.status_code == 422 and r.json()["detail"][0]["where"] == "body.histories"
        r = c.post("/v1/recommend", content=b'{"history": [', headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "malformed JSON" in r.json()["detail"]
        assert c.post("/v1/recommend", content=b"history=1").status_code == 400  # not JSON at all
        for k in (0, 1001, "ten"):
            r = c.post("/v1/recommend", json={"history": known, "k": k})
            assert r.status_code == 422 and r.json()["detail"][0]["where"] == "body.k"
        r = c.post("/v1/recommend", json={"history": known, "kk": 3})  # a typo is an error, not ignored
        assert r.status_code == 422 and r.json()["detail"][0]["where"] == "body.kk"
        r = c.post("/v1/recommend", json={"history": known * 2000})  # over the body limit
        assert r.status_code == 413 and "bytes" in r.json()["detail"]
        assert c.post("/v1/items", json={"items": [NEW]}).status_code == 200  # loopback, no key set: allowed
        r = c.post("/v1/items", json={"items": [{**NEW, "title": "again"}]})
        assert r.status_code == 409 and "new-1" in r.json()["detail"]
        assert c.post("/v1/items/remove", json={"item_ids": ["nope"]}).status_code == 422
        assert c.get("/v1/items/nope").status_code == 404


def test_a_long_history_is_cut_to_the_window_and_said_so(client):
    rec = client.app.state.server.state.recommender
    window = rec.model.max_items
    history = [rec.tokenizer.item_ids[i % 40] for i in range(10_000)]
    answer = client.post("/v1/recommend", json={"history": history, "k": 5}).json()
    assert answer["history_used"] == window and answer["history_truncated"] is True
    assert ids_of(answer) == [r.item_id for r in rec.recommend(history, k=5)]


# -- keys -------------------------------------------------------------------------------------------
def test_keys_on_writes_and_optional_read_key(item_run, tmp_path):
    with TestClient(app_for(item_run, tmp_path / "s", api_key=KEY, read_key="reader")) as c:
        history = c.app.state.server.state.recommender.tokenizer.item_ids[:2]
        assert c.post("/v1/items", json={"items": [NEW]}).status_code == 401
        assert c.post("/v1/items", json={"items": [NEW]}, headers=auth("wrong")).status_code == 403
        assert c.post("/v1/items", json={"items": [NEW]}, headers=auth("reader")).status_code == 403
        assert c.post("/v1/items", json={"items": [NEW]}, headers=auth()).status_code == 200
        assert c.post("/v1/recommend", json={"history": history}).status_code == 401
        assert c.post("/v1/recommend", json={"history": history}, headers=auth("reader")).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200


def test_without_a_key_beyond_loopback_writes_are_refused(item_run, tmp_path):
    with TestClient(app_for(item_run, tmp_path / "s", loopback_only=False)) as c:
        r = c.post("/v1/items", json={"items": [NEW]})
        assert r.status_code == 403 and "SIDREC_API_KEY" in r.json()["detail"]


# -- writes, the change log, snapshots ----------------------------------------------------------------
def test_add_remove_and_item_info(client):
    r = client.post("/v1/items", json={"items": [NEW]}, headers=auth())
    assert r.json() == {"added": ["new-1"], "catalog_version": 1}
    info = client.get("/v1/items/new-1").json()
    assert info["status"] == "active" and info["added_after_training"] and info["added_at"]
    assert len(info["semantic_id"]) == client.app.state.server.state.recommender.tokenizer.num_levels
    old = client.app.state.server.state.recommender.tokenizer.item_ids[0]
    r = client.post("/v1/items/remove", json={"item_ids": [old]}, headers=auth())
    assert r.json() == {"removed": 1, "catalog_version": 2}
    info = client.get(f"/v1/items/{old}").json()
    assert info["status"] == "removed" and not info["added_after_training"] and info["removed_at"]
    history = client.app.state.server.state.recommender.tokenizer.item_ids[1:4]
    assert old not in ids_of(client.post("/v1/recommend", json={"history": history, "k": 50}).json())
    info = client.get("/v1/info").json()
    assert info["family"] == "item" and info["preset"] == "generator/hybrid"
    assert info["fused_with_sasrec"] is False and info["fusion"] is None
    assert info["catalog"]["version"] == 2 and info["catalog"]["items"] == info["catalog"]["rows"] - 1
    metrics = client.get("/metrics").text
    assert 'sidrec_request_seconds_count{endpoint="/v1/items",method="POST",status="200"} 1.0' in metrics
    for name in ("sidrec_requests_total", "sidrec_request_seconds_bucket", "sidrec_batch_size_bucket",
                 "sidrec_queue_depth", "sidrec_catalog_items", "sidrec_catalog_version 2.0",
                 "sidrec_writes_since_snapshot 2.0"):
        assert name in metrics


def test_change_log_is_replayed_exactly_after_a_crash(item_run, tmp_path):
    """Writes reach the log before they are acknowledged; a new writer (after the old one died without a
    snapshot) replays them: same catalog, same semantic IDs, same recommendations."""
    state = CatalogState.open_writer(tmp_path / "s", run=item_run)
    rec = state.recommender
    state.add([NEW, {"item_id": 990077, "title": "Blue Nail Polish"}])
    state.remove([rec.tokenizer.item_ids[5]])
    histories = some_histories(rec) + [["new-1"]]
    expected = rec.recommend(histories, k=8)
    records = read_log(state.log_path).records
    assert [r["op"] for r in records] == ["add", "remove"] and records[0]["items"][0]["text_embedding"]
    state.log.close()  # dies: no snapshot, the lock goes with the process
    import os

    os.close(state.lock_fd)
    again = CatalogState.open_writer(tmp_path / "s", run=item_run)
    assert again.version == 2 and again.writes_since_snapshot == 2 and again.snapshot_name == "v000000000"
    assert (again.recommender.tokenizer.codes == rec.tokenizer.codes).all()
    assert_same(again.recommender.recommend(histories, k=8), expected)
    assert_same(load_state(tmp_path / "s").recommend(histories, k=8), expected)
    again.close()


def test_a_torn_last_line_is_reported_skipped_and_cut(item_run, tmp_path, caplog):
    state = CatalogState.open_writer(tmp_path / "s", run=item_run)
    state.add([NEW])
    log_path = state.log_path
    state.log.close()
    import os

    os.close(state.lock_fd)
    with open(log_path, "ab") as f:
        f.write(b'{"seq": 2, "op": "add", "items": [{"item_')  # killed mid-write
    assert load_state(tmp_path / "s").tokenizer.item_ids[-1] == "new-1"
    assert "torn last line" in caplog.text
    again = CatalogState.open_writer(tmp_path / "s", run=item_run)
    assert "cut short by a crash" in caplog.text and log_path.read_bytes().endswith(b"\n")
    again.add([{"item_id": "new-2", "title": "Mint Shampoo"}])
    assert [r["seq"] for r in read_log(log_path).records] == [1, 2]
    again.close()
    with open(tmp_path / "s" / "logs" / "v000000002.jsonl", "ab") as f:
        f.write(b'garbage\n{"seq": 3}\n')  # damage before the last line is not a crash artefact
    with pytest.raises(ValueError, match="damaged"):
        load_state(tmp_path / "s")


def test_snapshots_move_current_start_a_new_log_and_prune(item_run, tmp_path):
    with TestClient(app_for(item_run, tmp_path / "s", api_key=KEY, snapshot_every=2)) as c:
        for n in range(5):
            r = c.post("/v1/items", json={"items": [{"item_id": f"n{n}", "title": f"Lotion {n}"}]}, headers=auth())
            assert r.json()["catalog_version"] == n + 1
        root = tmp_path / "s"
        assert (root / "CURRENT").read_text().strip() == "v000000004"
        assert [len(read_log(root / "logs" / f"{v}.jsonl").records) for v in ("v000000004",)] == [1]
        assert sorted(p.name for p in (root / "snapshots").iterdir() if p.is_dir()) == ["v000000002", "v000000004"]
        with pytest.raises(ValueError, match="one writer"):
            CatalogState.open_writer(root, run=item_run)
        history = c.app.state.server.state.recommender.tokenizer.item_ids[:3]
        served = ids_of(c.post("/v1/recommend", json={"history": history, "k": 10}).json())
        assert [r.item_id for r in load_state(root).recommend(history, k=10)] == served
        assert c.post("/v1/snapshot", headers=auth()).json() == {"snapshot": "v000000005", "catalog_version": 5}
    assert (root / "CURRENT").read_text().strip() == "v000000005"  # nothing new at shutdown: no new snapshot


def test_a_state_folder_serves_one_run(item_run, trained_run, tiny_run, tmp_path):
    CatalogState.open_writer(tmp_path / "s", run=item_run).close()
    state = CatalogState.open_writer(tmp_path / "s")  # a restart needs no run folder
    state.close()
    fingerprint = json.loads((item_run / "dataset" / "stats.json").read_text())["fingerprint"]
    assert fingerprint  # the same dataset: trained_run shares it, so it is accepted
    assert json.loads((trained_run / "dataset" / "stats.json").read_text())["fingerprint"] == fingerprint
    CatalogState.open_writer(tmp_path / "s", run=trained_run).close()
    with pytest.raises(ValueError, match="give another --state folder"):  # another dataset: refused
        CatalogState.open_writer(tmp_path / "s", run=tiny_run)
    with pytest.raises(ValueError, match="no snapshot yet"):
        CatalogState.open_writer(tmp_path / "empty")


# -- replicas ---------------------------------------------------------------------------------------
def test_a_read_replica_follows_the_writer_and_refuses_writes(item_run, tmp_path):
    root = tmp_path / "s"
    replica_app = create_app(settings=ServeSettings(state_dir=root, read_only=True, follow_interval_s=0.05))
    with TestClient(replica_app) as replica:
        assert replica.get("/readyz").status_code == 503  # no writer yet: waits for its first snapshot
        with TestClient(app_for(item_run, root, api_key=KEY, snapshot_every=3)) as writer:
            wait_until(lambda: replica.get("/readyz").status_code == 200)
            assert writer.post("/v1/items", json={"items": [NEW]}, headers=auth()).status_code == 200
            wait_until(lambda: replica.get("/v1/items/new-1").status_code == 200)
            r = replica.post("/v1/items", json={"items": [{"item_id": "x", "title": "y"}]}, headers=auth())
            assert r.status_code == 403 and "replica" in r.json()["detail"]
            for n in range(3):  # the third write moves CURRENT: the replica loads the new snapshot
                writer.post("/v1/items", json={"items": [{"item_id": f"m{n}", "title": "Soap"}]}, headers=auth())
            wait_until(lambda: replica_app.state.server.state.snapshot_name == "v000000003"
                       and replica.get("/v1/items/m2").status_code == 200)
            history = ["new-1", "m0"]
            a = writer.post("/v1/recommend", json={"history": history}).json()
            b = replica.post("/v1/recommend", json={"history": history}).json()
            assert ids_of(a) == ids_of(b) and a["catalog_version"] == b["catalog_version"] == 4


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_changelog_writer_appends_whole_lines(tmp_path):
    log = ChangeLog(tmp_path / "log.jsonl")
    log.append({"seq": 1, "op": "remove", "item_ids": ["a"]})
    log.append({"seq": 2, "op": "remove", "item_ids": ["é"]})
    log.close()
    read = read_log(tmp_path / "log.jsonl")
    assert [r["seq"] for r in read.records] == [1, 2] and read.torn == 0
    assert read_log(tmp_path / "log.jsonl", start=read.end).records == []
    assert read_log(tmp_path / "missing.jsonl").records == []


def test_a_failed_batch_fails_only_its_requests():
    def recommend(histories, **kw):
        if kw["k"] == 2:
            raise ValueError("bad setting")
        return [[len(h)] for h in histories], 0

    batcher = MicroBatcher(recommend=recommend, max_wait_ms=100)
    gate = threading.Event()
    batcher.call(gate.wait)
    bad: Future = batcher.submit(ReadJob([["a"]], 2, True, 0.0))
    good: Future = batcher.submit(ReadJob([["a", "b"]], 3, True, 0.0))
    gate.set()
    assert good.result(timeout=10) == ([[2]], 0)
    with pytest.raises(ValueError, match="bad setting"):
        bad.result(timeout=10)
    batcher.stop()


def test_a_logged_write_that_cannot_be_applied_stops_writes_until_a_restart_replays_it(item_run, tmp_path,
                                                                                        monkeypatch):
    state = CatalogState.open_writer(tmp_path / "s", run=item_run)
    real = state.recommender.apply_items

    def broken(new):
        raise MemoryError("simulated")

    monkeypatch.setattr(state.recommender, "apply_items", broken)
    with pytest.raises(RuntimeError, match="in the change log but could not be applied"):
        state.add([NEW])
    monkeypatch.setattr(state.recommender, "apply_items", real)
    with pytest.raises(RuntimeError, match="restart the server"):  # no write may reuse its sequence number
        state.add([{"item_id": "new-2", "title": "Mint Shampoo"}])
    state.log.close()
    import os

    os.close(state.lock_fd)
    again = CatalogState.open_writer(tmp_path / "s", run=item_run)
    assert again.version == 1 and again.recommender.item_index("new-1") is not None
    again.close()


def test_a_fused_release_is_served_fused_and_says_how(item_run, tmp_path):
    """A release saved from a fused recommender serves the fused ranking (equal to the Recommender's answers)
    and /v1/info shows the fusion's settings, the text weight included."""
    import dataclasses
    import shutil

    from sidrec.cli import main as cli_main
    from sidrec.decoding.fusion import FusionSettings

    run = tmp_path / "run"
    shutil.copytree(item_run, run)
    assert cli_main(["sasrec", "--run", str(run), "--epochs", "1", "--hidden-size", "16"]) == 0
    FusionSettings(weight=0.4, norm="zscore", text_weight=0.5).save(run)  # as `evaluate --fuse sasrec` would
    fused = sidrec.Recommender.from_pretrained(run, fuse=True)
    fused.save_pretrained(tmp_path / "release")
    histories = some_histories(fused)
    expected = [[r.item_id for r in fused.recommend(h, k=5)] for h in histories]
    with TestClient(app_for(tmp_path / "release", tmp_path / "state", api_key=KEY)) as c:
        info = c.get("/v1/info").json()
        assert info["fused_with_sasrec"] is True
        assert info["fusion"] == dataclasses.asdict(FusionSettings(weight=0.4, norm="zscore", text_weight=0.5))
        for h, want in zip(histories, expected, strict=True):
            assert ids_of(c.post("/v1/recommend", json={"history": h, "k": 5}).json()) == want
