"""Generator training on a tiny real run folder: smoke run, resume equivalence, 2-process DDP, CLI errors.

The run folder is the 300-user Beauty slice (``tiny_run``) plus a real ``SemanticIdTokenizer`` fitted by
RQ-KMeans on random embeddings (8 x 8 codes + collision level): the generator only needs a codes table,
so the tests do not pay for sentence embeddings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import free_port
from safetensors.torch import load_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # every test here fits or trains

TINY = [
    "--config", "generator/cpu-small",  # the tiger family; ITEM below switches to the item family
    "--d-model", "32", "--num-layers", "1", "--num-decoder-layers", "1", "--num-heads", "2", "--d-kv", "16",
    "--d-ff", "64", "--max-items", "5", "--user-buckets", "16", "--batch-size", "32", "--lr", "0.005",
    "--warmup-steps", "4", "--beam-size", "10", "--log-every", "2", "--valid-max-users", "40",
    "--eval-batch-size", "16", "--dropout", "0.1",
]

# the item family: no user token, no text (the tests run no sentence-embedding model), IDs for warm items
ITEM = ["--family", "item", "--user-buckets", "0", "--text-input", "false", "--id-min-count", "1",
        "--hybrid-weights", "0,1,4"]


def make_generator_run(src: Path, dst: Path) -> Path:
    """Copy a prepared run folder and add a tiny fitted tokenizer (random embeddings, RQ-KMeans 8x8)."""
    from sidrec.data import PreparedDataset
    from sidrec.tokenizer.config import TokenizerConfig
    from sidrec.tokenizer.semantic_ids import SemanticIdTokenizer

    shutil.copytree(src / "dataset", dst / "dataset")
    dataset = PreparedDataset.load(dst)
    emb = np.random.default_rng(0).normal(size=(dataset.num_items, 16)).astype(np.float32)
    config = TokenizerConfig(method="rqkmeans", num_levels=2, codebook_size=8, kmeans_niter=5, collision_min_size=4)
    tokenizer = SemanticIdTokenizer.fit(item_ids=dataset.item_ids, embeddings=emb, config=config)
    tokenizer.save_pretrained(dst / "tokenizer")
    return dst




@pytest.fixture(scope="module")
def gen_run(tmp_path_factory, tiny_run) -> Path:
    return make_generator_run(tiny_run, tmp_path_factory.mktemp("gen_run"))


def _fresh(gen_run: Path, tmp_path: Path, name: str) -> Path:
    run = tmp_path / name
    shutil.copytree(gen_run / "dataset", run / "dataset")
    shutil.copytree(gen_run / "tokenizer", run / "tokenizer")
    return run


def _weights(run: Path, sub: str = "generator") -> dict[str, torch.Tensor]:
    return load_file(str(run / sub / "model.safetensors"))


def test_smoke_run_writes_model_log_and_state(gen_run, tmp_path):
    from sidrec.seqmodel import SemanticIdGenerator
    from sidrec.train.generator import main

    run = _fresh(gen_run, tmp_path, "smoke")
    assert main(["--run", str(run), *TINY, "--max-steps", "6", "--eval-every", "3", "--save-every", "3"]) == 0
    log = json.loads((run / "generator" / "training.json").read_text())
    assert log["steps"] == 6 and [h["step"] for h in log["history"]] == [3, 6]
    assert all(0.0 <= h["recall@10"] <= 1.0 and h["users"] == 40 for h in log["history"])
    assert log["best_step"] in (3, 6)
    model = SemanticIdGenerator.from_pretrained(run / "generator")
    assert model.max_items == 5 and model.vocab.num_user_buckets == 16
    (states,) = (run / "generator_state").iterdir()  # one folder per training run, named by its id
    assert states.name == log["run_id"]
    assert sorted(p.name for p in states.iterdir()) == ["run.json", "step-00000003", "step-00000006"]
    # the examples cache was written once and is reused
    assert len(list((run / "generator_cache").iterdir())) == 1


def test_loss_decreases_on_real_slice(gen_run, tmp_path):
    from sidrec.train.generator import main

    run = _fresh(gen_run, tmp_path, "loss")
    main(["--run", str(run), *TINY, "--max-steps", "30", "--eval-every", "0", "--save-every", "0",
          "--log-every", "10", "--dropout", "0.0"])
    log = json.loads((run / "generator" / "training.json").read_text())
    assert log["steps"] == 30
    curve = [loss for _, loss in log["loss_curve"]]
    # per-level cross-entropy starts near mean(log C_t) and falls once the model learns popularity / sequence
    assert len(curve) == 3 and curve[-1] < curve[0] - 0.05, curve


def test_item_family_trains_and_keeps_the_weight_chosen_on_valid(gen_run, tmp_path):
    from sidrec.decoding import DecodingSettings
    from sidrec.seqmodel import ItemLevelGenerator, load_generator
    from sidrec.train.generator import main

    run = _fresh(gen_run, tmp_path, "item")
    assert main(["--run", str(run), *TINY, *ITEM, "--max-steps", "30", "--eval-every", "15", "--save-every", "0",
                 "--log-every", "10", "--dropout", "0.0", "--lr", "0.01", "--prior-weights", "0,0.5"]) == 0
    log = json.loads((run / "generator" / "training.json").read_text())
    assert log["steps"] == 30 and [h["step"] for h in log["history"]] == [15, 30]
    for entry in log["history"]:  # every validation ranks with each weight and measures the dense head alone
        assert set(entry["by_weight"]) == {"0.0", "1.0", "4.0"} and 0 <= entry["dense"]["ndcg@10"] <= 1
        assert entry["ndcg@10"] == max(m["ndcg@10"] for m in entry["by_weight"].values())
    model = load_generator(run / "generator")
    assert isinstance(model, ItemLevelGenerator) and model.max_items == 5 and not model.reads_text
    # after training the kept model was validated with each popularity correction; the best pair is stored
    sweep = {row["prior_weight"]: row for row in log["prior_sweep"]}
    assert set(sweep) == {0.0, 0.5} and all(0 <= row["tail_recall@10"] <= 1 for row in sweep.values())
    kept = max(log["prior_sweep"], key=lambda row: row["ndcg@10"])
    settings = DecodingSettings.load(run / "generator")
    assert (settings.prior_weight, settings.dense_weight) == (kept["prior_weight"], kept["hybrid_weight"])
    assert (log["prior_weight"], log["hybrid_weight"]) == (kept["prior_weight"], kept["hybrid_weight"])
    best = next(h for h in log["history"] if h["step"] == log["best_step"])
    assert sweep[0.0]["ndcg@10"] == pytest.approx(best["ndcg@10"], abs=1e-5)  # weight 0 = the kept validation
    curve = [loss for _, loss in log["loss_curve"]]
    assert curve[-1] < curve[0] - 0.1, curve  # generation + dense loss falls on real sequences


@pytest.mark.parametrize("family", ["tiger", "item"])
def test_resume_mid_epoch_matches_uninterrupted(gen_run, tmp_path, family):
    """Stop after the step-10 state (epoch 1, batch 3), resume to step 12; weights equal an uninterrupted run.

    7 batches per epoch, so the resume lands mid-way through the second epoch (length-grouped shuffle of epoch 1, skip_first_batches). Exact equality holds because the same
    batches, dropout masks (accelerate restores the RNG states; the DataLoader draws its seed from its own
    generator, not the global one) and optimiser/scheduler states are replayed in the same order.
    """
    from sidrec.train.generator import main

    # 7 batches per epoch: tiger 3261 prefixes in batches of 512, item 778 user windows in batches of 128
    batch = "512" if family == "tiger" else "128"
    base = [*TINY, *(ITEM if family == "item" else []), "--batch-size", batch, "--eval-every", "0",
            "--save-every", "5", "--keep-states", "5"]
    full = _fresh(gen_run, tmp_path, "full")
    main(["--run", str(full), *base, "--max-steps", "12"])
    part = _fresh(gen_run, tmp_path, "part")
    main(["--run", str(part), *base, "--max-steps", "11"])  # interrupted one step after the step-10 state
    (state,) = (part / "generator_state").glob("*/step-00000010")
    progress = json.loads((state / "progress.json").read_text())
    assert (progress["epoch"], progress["batch_in_epoch"]) == (1, 3)
    main(["--run", str(part), *base, "--max-steps", "12", "--resume"])
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_validation_at_training_minutes(gen_run, tmp_path):
    """eval_at_minutes validates once per mark passed (a learning curve at fixed budgets), then at the end."""
    from sidrec.train.generator import main

    run = _fresh(gen_run, tmp_path, "marks")
    # the first mark is passed after one step (a step takes far more than 6 ms); the second never is
    main(["--run", str(run), *TINY, "--max-steps", "3", "--eval-every", "0", "--save-every", "0",
          "--eval-at-minutes", "0.0001,10000"])
    log = json.loads((run / "generator" / "training.json").read_text())
    assert [h["step"] for h in log["history"]] == [1, 3]
    assert log["history"][0]["train_seconds"] <= log["history"][1]["train_seconds"]


def test_cooldown_anneals_the_learning_rate_to_zero_at_the_end_of_the_budget(gen_run, tmp_path):
    """cooldown 0.5: the scheduler's rate until half the budget is spent, then linearly down to 0."""
    from sidrec.train.generator import main

    lrs = {}
    for cooldown in ("0", "0.5"):
        run = _fresh(gen_run, tmp_path, f"cool{cooldown}")
        main(["--run", str(run), *TINY, "--max-steps", "8", "--eval-every", "2", "--save-every", "0",
              "--patience", "0", "--cooldown", cooldown])
        history = json.loads((run / "generator" / "training.json").read_text())["history"]
        lrs[cooldown] = {h["step"]: h["lr"] for h in history}
    assert list(lrs["0.5"]) == [2, 4, 6, 8]
    ratio = {step: lrs["0.5"][step] / lrs["0"][step] for step in (2, 4, 6)}
    assert ratio == pytest.approx({2: 1.0, 4: 1.0, 6: 0.5})  # spent 1/4, 1/2: untouched; 3/4: halfway down
    assert lrs["0.5"][8] == 0.0 < lrs["0"][8]


def test_unknown_field_lists_valid_ones(gen_run, tmp_path):
    from sidrec.train.generator import main

    with pytest.raises(ValueError, match="Valid fields: .*max_steps"):
        main(["--run", str(tmp_path), "--max-stepz", "3"])


def test_resume_without_state_is_an_error(gen_run, tmp_path):
    from sidrec.train.generator import main

    run = _fresh(gen_run, tmp_path, "nostate")
    with pytest.raises(ValueError, match="no saved state"):
        main(["--run", str(run), *TINY, "--max-steps", "2", "--resume"])


@pytest.mark.parametrize("family", ["tiger", "item"])
def test_two_process_ddp_matches_single_process_eval(gen_run, tmp_path, family):
    """2 CPU processes (gloo): both ranks end with identical weights; gathered metrics = 1-process eval
    (for the item family: the hybrid ranking with the weight chosen on the gathered validation)."""
    from sidrec.data import PreparedDataset
    from sidrec.decoding import CatalogTrie
    from sidrec.eval.metrics import ranking_metrics
    from sidrec.train.generator import evaluate_generator, load_item_codes
    from sidrec.utils.run_folder import RunFolder

    run = _fresh(gen_run, tmp_path, f"ddp-{family}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "-m", "sidrec.train.generator", "--run", str(run), *TINY, *(ITEM if family == "item" else []),
           "--max-steps", "40", "--eval-every", "40", "--save-every", "40", "--valid-max-users", "299", "--lr", "0.02",
           "--cooldown", "0.3", "--max-minutes", "60"]  # the cooldown reads the main rank's clock on every rank
    # a timeout: a rank stuck in a collective must fail the test, not hang CI
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = json.loads((run / "generator" / "training.json").read_text())
    assert log["processes"] == 2 and log["best_step"] == 40
    # each rank hashed the bytes of its own final weights; the trainer gathered the hashes
    digests = log["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    # the gathered validation metrics (299 users: uneven shards, padding dropped) = one process on the saved model
    dataset = PreparedDataset.load(run)
    codes, sizes = load_item_codes(run, dataset.item_ids)
    loaded = RunFolder(run).generator()
    assert loaded.settings.beam_size == 10 and loaded.model.generation_config.num_beams == 10
    split = dataset.eval_split("valid").sample(299, seed=0)
    topk = evaluate_generator(loaded.model, trie=CatalogTrie(codes=codes, level_sizes=sizes), item_codes=codes,
                              histories=split.histories, user_ids=[dataset.user_ids[u] for u in split.user_index],
                              settings=loaded.settings)
    single = ranking_metrics(topk, split.targets, ks=(1, 5, 10))
    gathered = log["history"][-1]
    assert gathered["users"] == 299 and single["recall@10"] > 0  # a comparison of non-trivial numbers
    for key in ("recall@10", "ndcg@10", "recall@1"):
        assert gathered[key] == pytest.approx(single[key], abs=1e-5), key


def test_length_grouped_sampler_covers_each_example_once_per_epoch():
    from sidrec.train.common import LengthGroupedBatchSampler

    lengths = np.random.default_rng(1).integers(1, 21, 1000)
    sampler = LengthGroupedBatchSampler(lengths=lengths, batch_size=32, seed=0, group=4)
    epochs = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 32  # 7 full chunks of 4 batches + 104 examples -> 4 more
        flat = sorted(i for b in batches for i in b)
        assert flat == list(range(1000))
        epochs.append(batches)
    assert epochs[0] != epochs[1]
    sampler.set_epoch(0)
    assert list(sampler) == epochs[0]  # deterministic per (seed, epoch)
    # grouping: the mean within-batch length spread is far below that of random batches
    spread = np.mean([np.ptp(lengths[b]) for b in epochs[0]])
    assert spread < 8 < np.mean([np.ptp(lengths[b]) for b in np.array_split(np.arange(1000), 32)])


def test_lr_schedule_warms_up_then_decays_as_inverse_sqrt():
    from sidrec.train.generator import inverse_sqrt_lambda

    f = inverse_sqrt_lambda(100)
    assert f(0) == pytest.approx(0.01) and f(49) == pytest.approx(0.5) and f(99) == pytest.approx(1.0)
    assert f(399) == pytest.approx(0.5) and f(9999) == pytest.approx(0.1)  # sqrt(100 / step)


def test_a_step_budget_gives_the_same_weights_whatever_the_time_cap(gen_run, tmp_path):
    """The quickstart's budgets are steps (and epochs) with minutes only as a cap: a cap that is not reached
    changes nothing, so the same command on a busy machine trains the same model, later."""
    from sidrec.train.generator import main

    weights = []
    for cap in ("0", "60"):
        run = _fresh(gen_run, tmp_path, f"cap-{cap}")
        assert main(["--run", str(run), *TINY, "--max-steps", "8", "--eval-every", "4", "--save-every", "0",
                     "--max-minutes", cap]) == 0
        weights.append(_weights(run))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_the_quickstart_budgets_each_generator_preset_by_its_measured_steps(tmp_path):
    """A parallel quickstart trains the steps its README run made (its steps are cheaper than the hybrid's), an
    unlisted preset the hybrid's, and ``--generator-steps`` wins over both."""
    import argparse

    from sidrec.quickstart import QUICKSTART_GENERATOR_STEPS, _plan

    def planned_steps(config: str, steps: int | None) -> int:
        args = argparse.Namespace(overwrite=False, dataset="beauty", sasrec_epochs=1, sasrec_minutes=1.0,
                                  tokenizer_config="tokenizer/opq", tokenizer_args="", generator_config=config,
                                  generator_steps=steps, generator_minutes=30.0, samples=0)
        argv = _plan(args, tmp_path, skip=set())["generator"][1]
        return int(argv[argv.index("--max-steps") + 1])

    assert planned_steps("generator/parallel", None) == 5000
    assert planned_steps("generator/hybrid", None) == 3200
    assert planned_steps("generator/tiger", None) == QUICKSTART_GENERATOR_STEPS
    assert planned_steps("generator/parallel", 40) == 40
