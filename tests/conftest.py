"""Shared fixtures: small real slices of ../shared/data and prepared run folders built from them."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SIDREC_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared(name: str) -> Path:
    """A dataset folder under ../shared/data (skips the test when the folder is absent)."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {path} not available")
    return path


def write_slice(src: Path, dst: Path, num_users: int) -> Path:
    """Copy the first ``num_users`` users of a generic dataset (and the items they touch) to ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    users: list[str] = []
    keep_items: set[str] = set()
    with open(src / "interactions.csv", newline="") as f, open(dst / "interactions.csv", "w", newline="") as g:
        reader = csv.reader(f)
        writer = csv.writer(g)
        header = next(reader)
        writer.writerow(header)
        ui, ii = header.index("user_id"), header.index("item_id")
        for row in reader:
            if not users or users[-1] != row[ui]:
                if len(users) == num_users:
                    break
                users.append(row[ui])
            keep_items.add(row[ii])
            writer.writerow(row)
    with open(src / "items.jsonl") as f, open(dst / "items.jsonl", "w") as g:
        for line in f:
            if json.loads(line)["item_id"] in keep_items:
                g.write(line)
    return dst


@pytest.fixture(scope="session")
def beauty_slice(tmp_path_factory) -> Path:
    """The first 300 Beauty users in the generic format."""
    return write_slice(shared("amazon2014_beauty"), tmp_path_factory.mktemp("beauty_slice"), 300)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, beauty_slice) -> Path:
    """A run folder with RUN/dataset/ prepared from the 300-user Beauty slice (read-only for tests)."""
    from sidrec.data import load_raw, prepare

    run = tmp_path_factory.mktemp("tiny_run")
    dataset, _ = prepare(load_raw(str(beauty_slice)))
    dataset.save(run)
    return run


TOKENIZER_ARGS = ["--config", "tokenizer/rqkmeans", "--codebook-size", "16", "--kmeans-niter", "5"]
GENERATOR_ARGS = ["--config", "generator/cpu-small", "--d-model", "32", "--num-layers", "1",
                  "--num-decoder-layers", "1", "--num-heads", "2", "--d-kv", "16", "--d-ff", "64",
                  "--max-steps", "4", "--warmup-steps", "2", "--batch-size", "32", "--eval-every", "0",
                  "--valid-max-users", "16", "--save-every", "0", "--user-buckets", "0"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """prepare -> tokenize -> train on 30 Beauty users through the CLI, as a user would (a tiny model)."""
    from sidrec.cli import main as cli_main

    root = tmp_path_factory.mktemp("trained")
    data = write_slice(shared("amazon2014_beauty"), root / "data", 30)
    run = root / "run"
    assert cli_main(["prepare", "--dataset", str(data), "--out", str(run)]) == 0
    assert cli_main(["tokenize", "--run", str(run), *TOKENIZER_ARGS]) == 0
    assert cli_main(["train", "--run", str(run), *GENERATOR_ARGS]) == 0
    return run


HYBRID_ARGS = ["--config", "generator/hybrid", "--d-model", "32", "--num-layers", "1", "--num-decoder-layers", "1",
               "--num-heads", "2", "--d-kv", "16", "--d-ff", "64", "--max-steps", "4", "--warmup-steps", "2",
               "--batch-size", "16", "--eval-every", "0", "--valid-max-users", "16", "--save-every", "0",
               "--max-items", "10"]


@pytest.fixture(scope="session")
def item_run(trained_run, tmp_path_factory) -> Path:
    """The same 30-user run with an item-family (hybrid) generator instead of the tiger one (read-only for tests)."""
    import shutil

    from sidrec.cli import main as cli_main

    run = tmp_path_factory.mktemp("item") / "run"
    for part in ("dataset", "tokenizer", "cache"):
        shutil.copytree(trained_run / part, run / part)
    shutil.copy(trained_run / "catalog.jsonl", run / "catalog.jsonl")
    assert cli_main(["train", "--run", str(run), *HYBRID_ARGS]) == 0
    return run


def free_port() -> int:
    """A TCP port nobody listens on now (for `accelerate launch --main_process_port` in tests)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- 600 real Beauty items embedded with MiniLM once (tokenizer and quantizer tests) ------------------------
# The embeddings are cached in pytest's cache folder (keyed by model + template + text hash, like the library
# cache), so only the first test session on a machine pays for the encoding.
NUM_BEAUTY_ITEMS = 600


def _beauty_items(n: int) -> list[dict]:
    path = SHARED_DATA / "amazon2014_beauty" / "items.jsonl"
    if not path.is_file():
        pytest.skip(f"shared dataset {path} not available")
    items = []
    with open(path) as f:
        for line in f:
            items.append(json.loads(line))
            if len(items) == n:
                break
    return items


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread while a module's tests run: several threads on a small shared CPU are much slower.

    Modules that train or fit use it for every test: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    from sidrec.utils.threads import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def beauty_items() -> list[dict]:
    """The first 600 Beauty item records (dicts with item_id, title, brand, categories, ...)."""
    return _beauty_items(NUM_BEAUTY_ITEMS)


@pytest.fixture(scope="session")
def beauty_texts(beauty_items) -> list[str]:
    from sidrec.data import DEFAULT_TEMPLATE, render_item_text

    return [render_item_text(it, DEFAULT_TEMPLATE) for it in beauty_items]


@pytest.fixture(scope="session")
def embedding_cache(request) -> Path:
    return Path(request.config.cache.mkdir("sidrec_embeddings"))


@pytest.fixture(scope="session")
def beauty_emb(beauty_texts, embedding_cache) -> np.ndarray:
    """MiniLM embeddings ``(600, 384)`` of the Beauty slice."""
    from sidrec.data import DEFAULT_TEMPLATE
    from sidrec.tokenizer import embed_texts

    return embed_texts(beauty_texts, template=DEFAULT_TEMPLATE, cache_dir=embedding_cache, show_progress=False)
