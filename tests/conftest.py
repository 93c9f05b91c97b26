"""Shared fixtures: small real slices of ../shared/data and prepared run folders built from them."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

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


def free_port() -> int:
    """A TCP port nobody listens on now (for `accelerate launch --main_process_port` in tests)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
