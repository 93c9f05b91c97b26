"""Locust load for ``sidrec serve``, for those who use Locust (``benchmarks/serve_load.py`` needs nothing but httpx).

    SIDREC_API_KEY=KEY SIDREC_HISTORIES=histories.json \\
        locust -f benchmarks/locustfile.py --host http://127.0.0.1:8000 --users 200 --spawn-rate 50 --headless -t 60s

Each user waits 0 to 10 ms between requests; 99 in 100 are ``POST /v1/recommend`` (k=10) with a history drawn
from ``SIDREC_HISTORIES`` (a JSON list of histories, each a list of item ids, oldest first), 1 in 100 a
single-item ``POST /v1/items`` with a fresh ``bench-<uuid>`` id and ``Authorization: Bearer $SIDREC_API_KEY``
(the key the server was started with). A histories file from a run's test split:

    python -c "import json; from sidrec.utils.run_folder import RunFolder; ds = RunFolder('runs/qs2').dataset(); \\
print(json.dumps([[ds.item_ids[i] for i in h] for h in ds.eval_split('test').sample(2000).histories]))" > histories.json

Without ``SIDREC_HISTORIES`` a tiny built-in list is used: test histories of the Amazon Beauty run
(``runs/qs2``); its ids mean nothing to another catalog (the server answers them with errors).
"""

from __future__ import annotations

import json
import os
import random
import uuid

from locust import HttpUser, between, task

# A few test-split histories of runs/qs2 (Amazon Beauty); only meaningful against a server of that catalog.
BUILT_IN_HISTORIES = [
    ["20", "21", "22", "23", "4"],
    ["687", "666", "688", "689", "690"],
    ["806", "807", "808", "666"],
    ["1183", "1109", "1184", "1185", "93"],
    ["1109", "1302", "1303", "1304", "1305"],
    ["1109", "1323", "1324", "1325", "891"],
]


def load_histories() -> list[list[str]]:
    path = os.environ.get("SIDREC_HISTORIES")
    if not path:
        return BUILT_IN_HISTORIES
    with open(path, encoding="utf-8") as f:
        histories = [[str(i) for i in h] for h in json.load(f) if h]
    if not histories:
        raise ValueError(f"{path} holds no non-empty histories")
    return histories


HISTORIES = load_histories()
API_KEY = os.environ.get("SIDREC_API_KEY", "")


class SidrecUser(HttpUser):
    wait_time = between(0, 0.01)

    @task(99)
    def recommend(self) -> None:
        body = {"history": random.choice(HISTORIES), "k": 10, "exclude_seen": True}
        self.client.post("/v1/recommend", json=body, name="/v1/recommend")

    @task(1)
    def add_item(self) -> None:
        item = {"item_id": f"bench-{uuid.uuid4().hex}", "title": "Locust test item", "brand": "Locust",
                "categories": "Beauty > Test"}
        self.client.post("/v1/items", json={"items": [item]}, headers={"Authorization": f"Bearer {API_KEY}"},
                         name="/v1/items")
