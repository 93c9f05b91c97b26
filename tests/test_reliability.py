"""Run folders you can trust (issue 13): no silent overwrite, provenance between stages, checked loads.

One test (or a few) per case of the issue's probe, each reproducing the case on a small real run folder
(``trained_run``: 30 Beauty users, prepare -> tokenize -> train through the CLI) and checking that it now
gets a clear error or the right behaviour, with nothing lost. Case numbers follow the issue.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import types
import typing
from pathlib import Path

import numpy as np
import pytest
from conftest import GENERATOR_ARGS, shared, write_slice

import sidrec
from sidrec.cli import main as cli_main
from sidrec.tokenizer import SemanticIdTokenizer
from sidrec.utils.provenance import ProvenanceError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # every test here fits or trains


@pytest.fixture()
def run(trained_run, tmp_path) -> Path:
    """A private copy of the trained run (prepare -> tokenize -> train through the CLI)."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def _train(run: Path, *extra: str) -> int:
    from sidrec.train.generator import main

    return main(["--run", str(run), *GENERATOR_ARGS, *extra])


def _bytes(path: Path) -> bytes:
    return path.read_bytes()


def _state_runs(run: Path) -> dict[str, list[str]]:
    """run id -> its saved step folders."""
    root = run / "generator_state"
    return {p.name: sorted(s.name for s in p.glob("step-*")) for p in sorted(root.iterdir()) if p.is_dir()}


# ------------------------------------------------------------------------------------ 1. rerun of training
def test_1_rerun_of_training_keeps_the_trained_model_unless_told(run):
    weights = _bytes(run / "generator" / "model.safetensors")
    with pytest.raises(ValueError, match=r"already holds a trained model \(run .*--overwrite.*--resume"):
        _train(run, "--max-steps", "3")
    with pytest.raises(ValueError, match=r"field 'lr' \(--lr\) = 0.0 is not allowed; allowed: > 0"):
        _train(run, "--lr", "0")
    assert _bytes(run / "generator" / "model.safetensors") == weights  # nothing lost
    assert cli_main(["train", "--run", str(run), "--max-steps", "3"]) == 1  # the CLI: a clear error, exit 1
    before = json.loads((run / "generator" / "training.json").read_text())["run_id"]
    assert _train(run, "--max-steps", "3", "--overwrite") == 0  # asked for: replaced
    after = json.loads((run / "generator" / "training.json").read_text())
    assert after["run_id"] != before and after["steps"] == 3


# ------------------------------------------------------------------------------------ 2. states of two runs
def test_2_a_new_run_never_prunes_or_resumes_another_runs_states(run):
    shutil.rmtree(run / "generator")
    assert _train(run, "--overwrite", "--max-steps", "6", "--save-every", "2", "--keep-states", "2") == 0
    (first,) = [k for k, v in _state_runs(run).items() if v]
    assert _state_runs(run)[first] == ["step-00000004", "step-00000006"]
    shutil.rmtree(run / "generator")  # as if the first run had been killed before its first validation
    with pytest.raises(ValueError, match=rf"holds the saved states of {first} \(last state step-00000006\).*--resume"):
        _train(run, "--max-steps", "3", "--save-every", "1")
    # a new run beside it: own id, own states, pruned alone; the first run's states are untouched
    assert _train(run, "--overwrite", "--max-steps", "3", "--save-every", "1", "--keep-states", "1") == 0
    states = _state_runs(run)
    (second,) = [k for k, v in states.items() if v and k != first]
    assert states[first] == ["step-00000004", "step-00000006"] and states[second] == ["step-00000003"]
    # --resume continues the newest run (the second), not the one with the highest step
    assert _train(run, "--resume", "--max-steps", "4", "--save-every", "1", "--keep-states", "1") == 0
    log = json.loads((run / "generator" / "training.json").read_text())
    assert log["run_id"] == second and log["steps"] == 4
    # the first run can still be resumed by id; it did not make the current model, so that is explicit
    with pytest.raises(ValueError, match=rf"holds the model of run {second}, not of run {first}"):
        _train(run, "--resume", first, "--max-steps", "7")
    assert _train(run, "--resume", first, "--max-steps", "7", "--save-every", "2", "--overwrite") == 0
    log = json.loads((run / "generator" / "training.json").read_text())
    assert log["run_id"] == first and log["steps"] == 7


def test_2_states_from_before_run_ids_can_still_be_resumed(run, capsys):
    shutil.rmtree(run / "generator")
    assert _train(run, "--overwrite", "--max-steps", "4", "--save-every", "2") == 0
    root = run / "generator_state"
    for folder in [p for p in root.iterdir() if p.is_dir()]:  # the old layout: step-N straight under the root
        for step in folder.glob("step-*"):
            step.rename(root / step.name)
        shutil.rmtree(folder)
    config = run / "generator" / "config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "sidrec_provenance"}))
    assert _train(run, "--resume", "--max-steps", "6", "--save-every", "2") == 0
    assert "before run ids existed" in capsys.readouterr().err  # training sets up its own log handler
    assert sorted(p.name for p in root.iterdir()) == ["step-00000004", "step-00000006"]  # continued in place
    assert json.loads((run / "generator" / "training.json").read_text())["steps"] == 6


# ------------------------------------------------------------------------------------ 3. resume, other config
def test_3_resume_refuses_a_changed_config_and_names_the_fields(run):
    shutil.rmtree(run / "generator")
    assert _train(run, "--overwrite", "--max-steps", "4", "--save-every", "2", "--lr", "0.005") == 0
    with pytest.raises(ValueError, match=r"(?s)other settings.*lr: saved 0.005, now 0.001.*--keep-saved-config"):
        _train(run, "--resume", "--lr", "0.001", "--max-steps", "6")
    with pytest.raises(ValueError, match=r"(?s)d_model: saved 32, now 48"):  # before any model is built
        _train(run, "--resume", "--d-model", "48", "--lr", "0.005", "--max-steps", "6")
    # budgets may change; told to keep the saved values, it resumes with them and records what it used
    assert _train(run, "--resume", "--lr", "0.001", "--max-steps", "6", "--keep-saved-config") == 0
    log = json.loads((run / "generator" / "training.json").read_text())
    assert log["config"]["lr"] == 0.005 and log["steps"] == 6
    meta = json.loads((run / "generator_state" / log["run_id"] / "run.json").read_text())
    assert meta["config"]["lr"] == 0.005 and meta["resumes"][-1]["changed"]["max_steps"] == [4, 6]


def test_3_keep_saved_config_alone_continues_the_run_as_it_was_configured(run):
    from sidrec.train.generator import main

    shutil.rmtree(run / "generator")
    assert _train(run, "--overwrite", "--max-steps", "4", "--save-every", "2") == 0
    # no settings at all: the preset differs everywhere, the saved values win, budgets included
    assert main(["--run", str(run), "--resume", "--keep-saved-config"]) == 0
    assert json.loads((run / "generator" / "training.json").read_text())["steps"] == 4


# ------------------------------------------------------------------------------------ 4. refitted tokenizer
def _refit_tokenizer(run: Path, seed: int) -> None:
    """``sidrec tokenize --overwrite`` with another seed, without paying for embeddings (same table shape)."""
    from sidrec.tokenizer import SemanticIdTokenizer
    from sidrec.utils import atomic_dir

    old = SemanticIdTokenizer.from_pretrained(run / "tokenizer")
    emb = np.random.default_rng(seed).normal(size=(old.num_items, 16)).astype(np.float32)
    new = SemanticIdTokenizer.fit(item_ids=old.item_ids, embeddings=emb, config=old.config,
                                  text_template=old.text_template)
    new.stats["dataset_fingerprint"] = old.dataset_fingerprint
    with atomic_dir(run / "tokenizer") as tmp:
        new.save_pretrained(tmp)


def test_4_a_refitted_tokenizer_is_refused_by_every_loader(run, caplog):
    from sidrec.eval.evaluate import evaluate_run
    from sidrec.tokenizer import TokenizerConfig
    from sidrec.train.tokenizer import fit_run_tokenizer

    with pytest.raises(ValueError, match=r"already holds the output of `sidrec tokenize`.*built on it: generator/"):
        fit_run_tokenizer(run, TokenizerConfig(seed=7))
    recorded = json.loads((run / "generator" / "config.json").read_text())["sidrec_provenance"]["semantic_ids"]
    _refit_tokenizer(run, seed=7)
    now = json.loads((run / "tokenizer" / "config.json").read_text())["table"]["fingerprint"]
    assert now != recorded["fingerprint"]
    both = rf"records semantic-ID table {recorded['fingerprint']} .*it is table {now}.*sidrec train --run"
    with pytest.raises(ProvenanceError, match=both):
        sidrec.Recommender.from_pretrained(run)
    with pytest.raises(ProvenanceError, match=both):
        evaluate_run(run, baselines=[], n_boot=0, max_users=5)
    item = json.loads((run / "catalog.jsonl").read_text().splitlines()[0])["item_id"]
    assert cli_main(["recommend", "--run", str(run), "--history", item]) == 1
    assert "sidrec train --run" in caplog.text


def test_4_training_refuses_to_resume_on_a_refitted_tokenizer(run):
    """The states were trained on one semantic-ID table; resuming them on another would mix two codings."""
    shutil.rmtree(run / "generator")
    assert _train(run, "--overwrite", "--max-steps", "4", "--save-every", "2") == 0
    recorded = json.loads((run / "generator" / "config.json").read_text())["sidrec_provenance"]["semantic_ids"]
    _refit_tokenizer(run, seed=7)
    with pytest.raises(ProvenanceError, match=rf"(?s){recorded['fingerprint']}.*sidrec train --run"):
        _train(run, "--resume", "--max-steps", "6")


def test_dataset_tables_are_checked_against_their_stats(run):
    from sidrec.data import PreparedDataset

    stats_path = run / "dataset" / "stats.json"
    original = stats_path.read_text()
    stats = json.loads(original)
    stats["users"] += 1  # a table partly replaced: the counts no longer agree
    stats_path.write_text(json.dumps(stats))
    with pytest.raises(ValueError, match=r"tables disagree with .*stats.json \(users: recorded \d+, found \d+\)"):
        PreparedDataset.load(run)
    stats = json.loads(original)
    stats["fingerprint"] = "0" * 16  # same counts, other data
    stats_path.write_text(json.dumps(stats))
    with pytest.raises(ValueError, match=r"hash to fingerprint \w+, but .*records 0{16}"):
        PreparedDataset.load(run)
    stats_path.write_text(original)
    assert PreparedDataset.load(run).num_users == json.loads(original)["users"]


# ------------------------------------------------------------------------------------ 5. prepare again
def test_5_prepare_into_a_used_run_refuses_then_names_what_it_invalidates(run, tmp_path, caplog):
    other = write_slice(shared("amazon2014_beauty"), tmp_path / "other", 40)
    with pytest.raises(ValueError, match=r"(?s)already holds the output of `sidrec prepare`.*built on it: "
                                         r"tokenizer/ \(tokenize\), generator/ \(train\)"):
        cli_main_raising(["prepare", "--dataset", str(other), "--out", str(run)])
    assert sidrec.Recommender.from_pretrained(run).recommend([_first_item(run)], k=2)  # untouched, still works
    assert cli_main(["prepare", "--dataset", str(other), "--out", str(run), "--overwrite"]) == 0
    assert "the dataset changed" in caplog.text and "tokenizer/ (tokenize)" in caplog.text
    with pytest.raises(ProvenanceError, match=r"tokenizer was built from dataset \w+, but .*dataset is dataset \w+"):
        sidrec.Recommender.from_pretrained(run)


def cli_main_raising(argv: list[str]) -> None:
    """The CLI's command function itself (it raises; ``sidrec`` turns that into exit code 1)."""
    from sidrec.cli import COMMANDS

    COMMANDS[argv[0]][1](argv[1:])


def _first_item(run: Path) -> str:
    return json.loads((run / "catalog.jsonl").read_text().splitlines()[0])["item_id"]


def test_5_prepare_again_with_the_same_data_keeps_later_stages_valid(run, caplog):
    caplog.set_level(logging.INFO)
    source = json.loads((run / "dataset" / "prepare.json").read_text())["dataset_arg"]
    assert cli_main(["prepare", "--dataset", source, "--out", str(run), "--overwrite"]) == 0
    assert "the dataset is unchanged" in caplog.text
    assert sidrec.Recommender.from_pretrained(run).recommend([_first_item(run)], k=2)


# ------------------------------------------------------------------------------------ 6. truncated table
def test_6_a_truncated_semantic_id_table_is_refused(run):
    table = run / "tokenizer" / "semantic_ids.tsv"
    lines = table.read_text().splitlines(keepends=True)
    table.write_text("".join(lines[:11]))  # head -n 11: 10 of the items
    with pytest.raises(ValueError, match=rf"semantic_ids.tsv holds 10 rows, but .*records {len(lines) - 1}"):
        sidrec.Recommender.from_pretrained(run)
    # an edited row (same count) is caught by the fingerprint
    table.write_text("".join(lines[:2] + [lines[3], lines[2]] + lines[4:]))
    with pytest.raises(ValueError, match=r"records semantic-ID table \w+ .*edited"):
        SemanticIdTokenizer.from_pretrained(run / "tokenizer")


def test_6_a_catalog_that_does_not_match_the_table_is_refused(run):
    catalog = run / "catalog.jsonl"
    catalog.write_text("".join(catalog.read_text().splitlines(keepends=True)[:5]))
    with pytest.raises(ValueError, match=r"catalog.jsonl lacks \d+ of the tokenizer's items"):
        sidrec.Recommender.from_pretrained(run)


# ------------------------------------------------------------------------------------ 7. damaged files
@pytest.mark.parametrize("part", ["generator", "tokenizer"])
def test_7_truncated_weights_name_the_file(run, part):
    weights = run / part / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{part}/model.safetensors cannot be loaded .*truncated or damaged"):
        sidrec.Recommender.from_pretrained(run)


@pytest.mark.parametrize("path", ["generator/config.json", "generator/vocab.json", "tokenizer/config.json",
                                  "tokenizer/stats.json", "dataset/stats.json"])
def test_7_invalid_json_names_the_file(run, path):
    (run / path).write_text("")
    with pytest.raises(ValueError, match=rf"{path} is not valid JSON"):
        sidrec.Recommender.from_pretrained(run)


def test_7_damaged_caches_are_rebuilt_not_trusted(run, trained_run, tmp_path, capsys):
    from sidrec.tokenizer import embed_texts

    for arrow in (run / "generator_cache").rglob("*.arrow"):
        arrow.write_bytes(arrow.read_bytes()[:100])
    assert _train(run, "--overwrite", "--max-steps", "2") == 0
    err = capsys.readouterr().err
    assert "training-example cache" in err and "cannot be read" in err and "rebuilding it" in err
    texts = ["Title: rose lip balm", "Title: nail polish"]
    first = embed_texts(texts, cache_dir=tmp_path / "cache", show_progress=False)  # the model is loaded already
    (entry,) = (tmp_path / "cache").glob("emb-*.npy")
    entry.write_bytes(entry.read_bytes()[:60])
    np.testing.assert_allclose(embed_texts(texts, cache_dir=tmp_path / "cache", show_progress=False), first, atol=1e-5)


# ------------------------------------------------------------------------------------ 8. a string history
def test_8_a_string_history_is_not_split_into_characters(run):
    rec = sidrec.Recommender.from_pretrained(run)
    with pytest.raises(ValueError, match=r"single string \('12'\); pass a list of item ids"):
        rec.recommend("12")


# ------------------------------------------------------------------------------------ 9, 10. readers
def _ml100k(folder: Path, src: Path, extra_item_line: str = "", data_line: str = "") -> Path:
    """A MovieLens-100k folder (u.data, u.item) holding a real slice of ml-100k."""
    folder.mkdir()
    with open(src / "interactions.csv") as f, open(folder / "u.data", "w", encoding="latin-1") as g:
        next(f)
        for line in f:
            u, i, ts, r = line.strip().split(",")[:4]
            g.write(f"{u}\t{i}\t{r}\t{ts}\n")
        g.write(data_line)
    with open(src / "items.jsonl") as f, open(folder / "u.item", "w", encoding="latin-1") as g:
        for line in f:
            it = json.loads(line)
            g.write(f"{it['item_id']}|{it['title']}|01-Jan-1995||http://x|" + "|".join("0" * 19) + "\n")
        g.write(extra_item_line)
    return folder


def test_9_duplicate_ids_in_ml100k_u_item_are_an_error(tmp_path):
    from sidrec.data import read_dataset

    src = write_slice(shared("movielens_100k"), tmp_path / "src", 20)
    first = json.loads((src / "items.jsonl").read_text().splitlines()[0])["item_id"]
    folder = _ml100k(tmp_path / "ml-100k", src, extra_item_line=f"{first}|Other title|01-Jan-1995||x|" + "0|" * 18 + "0\n")
    with pytest.raises(ValueError, match=rf"u.item, line \d+: duplicate movie id '{first}'"):
        read_dataset(folder)


def test_10_an_interactions_file_holding_only_a_bom_is_empty(tmp_path):
    from sidrec.data import read_dataset

    (tmp_path / "interactions.csv").write_bytes(b"\xef\xbb\xbf")
    (tmp_path / "items.jsonl").write_text('{"item_id": "a"}\n')
    with pytest.raises(ValueError, match=r"interactions.csv: the file is empty"):
        read_dataset(tmp_path)


# ------------------------------------------------------------------------------------ 11. config validation
@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--d-model", "0", r"'d_model' \(--d-model\) = 0 is not allowed; allowed: >= 1"),
    ("--feed-forward-proj", "bogus", r"'feed_forward_proj' .* = 'bogus' is not allowed; allowed: one of relu, "
                                     r"gated-gelu, .*gated-silu"),
    ("--lr", "0", r"'lr' \(--lr\) = 0.0 is not allowed; allowed: > 0"),
    ("--warmup-steps", "-5", r"'warmup_steps' .* = -5 is not allowed; allowed: >= 0"),
    ("--eval-every", "-1", r"'eval_every' .* = -1 is not allowed; allowed: >= 0"),
    ("--dropout", "1.5", r"'dropout' .* = 1.5 is not allowed; allowed: \[0, 1\)"),
    ("--lr", "abc", r"--lr: GeneratorTrainConfig field 'lr': expected a number, got 'abc'"),
    ("--max-steps", "2.5", r"field 'max_steps': expected an integer, got '2.5'"),
])
def test_11_bad_values_name_the_field_value_and_range_before_any_model_is_built(tmp_path, flag, value, message):
    from sidrec.train.generator import main

    with pytest.raises(ValueError, match=message):
        main(["--run", str(tmp_path / "nowhere"), flag, value])  # the run folder is never looked at
    assert not (tmp_path / "nowhere").exists()


def test_11_yaml_errors_name_the_file_and_the_field(tmp_path):
    from sidrec.train.generator import GeneratorTrainConfig
    from sidrec.utils import load_config

    bad_value = tmp_path / "fast.yaml"
    bad_value.write_text("lr: fast\n")
    with pytest.raises(ValueError, match=rf"{bad_value}: GeneratorTrainConfig field 'lr': expected a number, got 'fast'"):
        load_config(GeneratorTrainConfig, bad_value)
    broken = tmp_path / "broken.yaml"
    broken.write_text("lr: 0.01\n  max_steps: [3\n")
    with pytest.raises(ValueError, match=rf"{broken}: not valid YAML"):
        load_config(GeneratorTrainConfig, broken)


def test_11_evaluate_bootstrap_below_zero_is_an_error(trained_run):
    from sidrec.eval.evaluate import evaluate_run, main

    with pytest.raises(SystemExit):
        main(["--run", str(trained_run), "--bootstrap", "-1", "--no-generator", "--baselines", "none"])
    with pytest.raises(ValueError, match="bootstrap resamples must be >= 0"):
        evaluate_run(trained_run, n_boot=-1, generator=False, baselines=[])


def _config_classes():
    from sidrec.data import PrepareConfig
    from sidrec.tokenizer import TokenizerConfig
    from sidrec.train.generator import GeneratorTrainConfig
    from sidrec.train.sasrec import SasrecTrainConfig

    return [GeneratorTrainConfig, SasrecTrainConfig, TokenizerConfig, PrepareConfig]


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda c: c.__name__)
def test_11_every_numeric_field_has_a_range_and_every_enum_its_values(cls):
    from sidrec.utils.config import Choice, Range, Text, check_fields, field_rules

    rules = field_rules(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        args = typing.get_args(tp)
        optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args
        if optional:  # `int | None`: a Range that also allows null
            (tp,) = [a for a in args if a is not type(None)]
        inner = typing.get_args(tp)[0] if typing.get_origin(tp) is list else tp
        if inner in (int, float):
            assert isinstance(rules.get(f.name), Range), f"{cls.__name__}.{f.name} has no Range"
            assert rules[f.name].null == optional, f"{cls.__name__}.{f.name}: Range(null=...) must match its type"
        elif inner is str:
            assert isinstance(rules.get(f.name), Choice | Text), f"{cls.__name__}.{f.name} has no Choice/Text"
    check_fields(cls())  # the defaults are allowed values


def test_11_feed_forward_proj_allows_exactly_what_t5_accepts():
    from transformers import T5Config

    from sidrec.train.generator import t5_activations

    allowed = t5_activations()
    assert {"relu", "gated-gelu", "gelu", "gated-silu", "silu"} <= set(allowed)
    for name in allowed:
        T5Config(feed_forward_proj=name)  # T5Config's own check passes for each
    with pytest.raises(Exception, match="not a valid activation"):  # and this check is a real one
        T5Config(feed_forward_proj="gated-relu-x")


def test_11_other_stages_check_their_configs_too(tiny_run, tmp_path):
    from sidrec.train.sasrec import main as sasrec_main
    from sidrec.train.tokenizer import main as tokenize_main

    with pytest.raises(ValueError, match=r"'hidden_size' \(--hidden-size\) = 0 is not allowed; allowed: >= 1"):
        sasrec_main(["--run", str(tiny_run), "--hidden-size", "0"])
    with pytest.raises(ValueError, match=r"'codebook_size' .* = 1 is not allowed; allowed: >= 2"):
        tokenize_main(["--run", str(tiny_run), "--codebook-size", "1"])
    with pytest.raises(ValueError, match=r"'min_user_count' .* = -1 is not allowed"):
        cli_main_raising(["prepare", "--dataset", "beauty", "--out", str(tmp_path / "r"), "--min-user-count", "-1"])


# ------------------------------------------------------------------------------------ 12. offline model names
def test_12_an_unknown_embedding_model_fails_at_once_offline(monkeypatch):
    from sidrec.tokenizer.embeddings import resolve_model_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"'all-MiniLM-L6-v3' is neither a local folder nor in the local Hugging "
                                         r"Face cache, and HF_HUB_OFFLINE is set; point --embedding-model at a local"):
        resolve_model_path("all-MiniLM-L6-v3")
    assert Path(resolve_model_path("all-MiniLM-L6-v2")).is_dir()  # the default still resolves to the package


def test_12_an_unreachable_hub_fails_at_once(monkeypatch):
    import huggingface_hub.constants

    from sidrec.tokenizer.embeddings import resolve_model_path

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    with pytest.raises(ValueError, match=r"hub \(http://127.0.0.1:9\) cannot be reached"):
        resolve_model_path("sentence-transformers/all-mpnet-base-v9")


def test_12_a_missing_local_folder_is_named(tmp_path):
    from sidrec.tokenizer.embeddings import resolve_model_path

    with pytest.raises(ValueError, match="no such folder"):
        resolve_model_path(str(tmp_path / "models" / "minilm"))


# ------------------------------------------------------------------------------------ 13. permissions, git
def test_13_every_file_of_a_trained_run_follows_the_umask(trained_run):
    """Weights too: safetensors writes 0600 whatever the umask, and a teammate could not load the model."""
    from sidrec.utils.io import current_umask

    mask = current_umask()
    files = [p for p in trained_run.rglob("*") if not p.is_symlink()]
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert {p.parent.name for p in weights} >= {"tokenizer", "generator"}
    for path in files:
        want = (0o777 if path.is_dir() else 0o666) & ~mask
        assert path.stat().st_mode & 0o777 == want, (path, oct(path.stat().st_mode & 0o777))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_13_an_unreadable_weights_file_says_permission_denied(trained_run, tmp_path):
    from sidrec.utils import load_safetensors

    weights = Path(shutil.copy(trained_run / "generator" / "model.safetensors", tmp_path / "w.safetensors"))
    weights.chmod(0o200)
    with pytest.raises(ValueError, match="permission denied"):
        load_safetensors(weights)


def test_13_outputs_follow_the_umask(tmp_path):
    from sidrec.utils import atomic_dir, atomic_write_text

    old = os.umask(0o027)
    try:
        with atomic_dir(tmp_path / "stage") as tmp:
            (tmp / "inner.txt").write_text("x")
        atomic_write_text(tmp_path / "stage" / "file.json", "{}")
        assert (tmp_path / "stage").stat().st_mode & 0o777 == 0o750
        assert (tmp_path / "stage" / "file.json").stat().st_mode & 0o777 == 0o640
        src = write_slice(shared("amazon2014_beauty"), tmp_path / "src", 20)
        os.umask(0o022)
        run = tmp_path / "run"
        assert cli_main(["prepare", "--dataset", str(src), "--out", str(run)]) == 0
    finally:
        os.umask(old)
    for path in [run, *run.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


#: what the libraries underneath may write outside the run folder: caches with their own redirect variable
REDIRECTABLE_CACHES = (".cache/matplotlib", ".config/matplotlib",  # MPLCONFIGDIR
                       ".cache/huggingface",  # HF_HOME
                       "torchinductor_")  # TORCHINDUCTOR_CACHE_DIR (under TMPDIR by default)


def test_13_nothing_outside_the_run_folder_is_written_but_redirectable_caches(run, tmp_path):
    """prepare, evaluate and recommend in a fresh process whose HOME and TMPDIR are empty folders."""
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    src = write_slice(shared("amazon2014_beauty"), tmp_path / "src", 20)
    script = f"""
from sidrec.cli import main
assert main(["prepare", "--dataset", {str(src)!r}, "--out", {str(tmp_path / "fresh")!r}]) == 0
assert main(["evaluate", "--run", {str(run)!r}, "--baselines", "popularity", "--bootstrap", "0",
             "--max-users", "5"]) == 0
assert main(["recommend", "--run", {str(run)!r}, "--history", {_first_item(run)!r}, "-k", "2"]) == 0
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "MPLCONFIGDIR", "HF_HOME", "TORCH"))}
    env.update(HOME=str(home), TMPDIR=str(tmp), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = [str(p.relative_to(root)) for root in (home, tmp) for p in root.rglob("*") if p.is_file()]
    assert not [w for w in written if not w.startswith(REDIRECTABLE_CACHES)], written
    assert (tmp_path / "fresh" / "dataset" / "stats.json").is_file() and (run / "eval" / "metrics.json").is_file()


def test_13_reading_the_git_commit_never_writes_the_index(tmp_path):
    from sidrec.eval.evaluate import git_commit

    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f.py").write_text("x = 1\n")
    subprocess.run([*git, "-C", str(tmp_path), "add", "f.py"], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-qm", "c"], check=True)
    stamp = (tmp_path / "f.py").stat().st_mtime + 100
    os.utime(tmp_path / "f.py", (stamp, stamp))  # stat-dirty: a plain `git status` would refresh the index
    index = (tmp_path / ".git" / "index").read_bytes()
    assert git_commit(tmp_path).endswith("-dirty") is False
    assert (tmp_path / ".git" / "index").read_bytes() == index and not (tmp_path / ".git" / "index.lock").exists()
    subprocess.run(["git", "-C", str(tmp_path), "status", "--porcelain"], capture_output=True, check=True)
    assert (tmp_path / ".git" / "index").read_bytes() != index  # what the old call did


# ------------------------------------------------------------------------------------ smaller cases
def test_prepare_out_that_is_a_file_or_not_writable(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ValueError, match=r"--out .*file is a file, not a folder"):
        cli_main_raising(["prepare", "--dataset", "beauty", "--out", str(afile)])
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    # root ignores mode bits; sysfs refuses new folders to everyone
    target = Path("/sys/sidrec-test-run") if os.geteuid() == 0 else locked / "run"
    try:
        with pytest.raises(ValueError, match=r"cannot write there .*choose a folder you can write to"):
            cli_main_raising(["prepare", "--dataset", "beauty", "--out", str(target)])
    finally:
        locked.chmod(0o755)


def _generic(folder: Path, inter: str, items: str = '{"item_id": "a", "title": "A"}\n') -> Path:
    folder.mkdir()
    (folder / "interactions.csv").write_text(inter)
    (folder / "items.jsonl").write_text(items)
    return folder


def test_a_200k_character_field_names_the_file_and_line(tmp_path):
    from sidrec.data import read_dataset

    folder = _generic(tmp_path / "d", "user_id,item_id\nu1,a\nu2," + "x" * 200_000 + "\n")
    with pytest.raises(ValueError, match=r"interactions.csv, line 3: not valid CSV \(field larger than field limit"):
        read_dataset(folder)


def test_an_unterminated_quote_names_the_line_without_printing_the_file(tmp_path):
    from sidrec.data import read_dataset

    rows = "".join(f"u{n},a\n" for n in range(5000))
    folder = _generic(tmp_path / "d", 'user_id,item_id\nu0,"a\n' + rows)
    with pytest.raises(ValueError, match=r"interactions.csv, line 2: not valid CSV .*never closed") as err:
        read_dataset(folder)
    assert len(str(err.value)) < 400


def test_a_bad_movielens_timestamp_names_the_file_and_line(tmp_path):
    from sidrec.data import read_dataset

    src = write_slice(shared("movielens_100k"), tmp_path / "src", 5)
    item = json.loads((src / "items.jsonl").read_text().splitlines()[0])["item_id"]
    folder = _ml100k(tmp_path / "ml-100k", src, data_line=f"1\t{item}\t3\t88x1\n")
    lines = (folder / "u.data").read_text().count("\n")
    with pytest.raises(ValueError, match=rf"u.data, line {lines}: timestamp '88x1' is not an integer"):
        read_dataset(folder)


def test_a_misspelt_text_template_field_is_an_error(tmp_path):
    src = write_slice(shared("amazon2014_beauty"), tmp_path / "src", 20)
    with pytest.raises(ValueError, match=r"field\(s\) 'titel' appear in no item .*Did you mean 'titel' -> 'title'"):
        cli_main_raising(["prepare", "--dataset", str(src), "--out", str(tmp_path / "r"),
                          "--text-template", "Title: {titel}; Brand: {brand}"])
    assert not (tmp_path / "r" / "dataset").exists()


def test_a_tab_in_an_item_id_is_refused_by_prepare(tmp_path):
    from sidrec.data import prepare, read_dataset

    inter = "user_id,item_id\n" + "".join(f"u1,{i}\n" for i in ("a", '"b\tc"', "d"))
    items = "".join(json.dumps({"item_id": i, "title": i}) + "\n" for i in ("a", "b\tc", "d"))
    with pytest.raises(ValueError, match=r"1 item id\(s\) contain a tab or a line-break character \(first: 'b\\tc'"):
        prepare(read_dataset(_generic(tmp_path / "d", inter, items)))


LINE_BREAKS = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("char", LINE_BREAKS)
def test_every_line_break_character_in_an_item_id_is_refused_by_prepare(tmp_path, char):
    """``str.splitlines`` breaks at all of these: an id holding one would break every later read of the tables."""
    from sidrec.data import prepare, read_dataset

    bad = f"b{char}c"
    inter = "user_id,item_id\n" + "".join(f'u1,"{i}"\n' for i in ("a", bad, "d"))  # CSV-quoted, raw
    items = "".join(json.dumps({"item_id": i, "title": "t"}) + "\n" for i in ("a", bad, "d"))
    with pytest.raises(ValueError, match=rf"U\+{ord(char):04X}"):
        prepare(read_dataset(_generic(tmp_path / "d", inter, items)))


@pytest.mark.parametrize("char", LINE_BREAKS)
def test_every_line_break_character_in_a_new_item_id_is_refused(run, char):
    rec = sidrec.Recommender.from_pretrained(run)
    n = rec.tokenizer.num_items
    with pytest.raises(ValueError, match=rf"new item #0 has item_id .* holding .*U\+{ord(char):04X}"):
        rec.add_items([{"item_id": f"x{char}y", "title": "x"}])
    assert rec.tokenizer.num_items == n


def test_tables_split_at_newlines_only_so_old_tables_with_odd_ids_still_load(tmp_path):
    from sidrec.data.catalog import load_catalog
    from sidrec.utils.ids import split_lines

    text = "".join(json.dumps({"item_id": f"i{c}", "title": "t"}, ensure_ascii=False) + "\r\n"
                   for c in ("\u2028", "\x85", "\x0c", "z"))
    (tmp_path / "catalog.jsonl").write_text(text, encoding="utf-8")
    ids, _, _ = load_catalog(tmp_path / "catalog.jsonl")
    assert ids == ["i\u2028", "i\x85", "i\x0c", "iz"]
    assert split_lines("a\u2028b\tc\nd\r\n") == ["a\u2028b\tc", "d"]


def test_a_timestamp_that_is_not_a_number_is_a_warning_naming_it(tmp_path, caplog):
    from sidrec.data import read_dataset

    inter = "user_id,item_id,timestamp\nu1,a,100\nu1,b,yesterday\nu2,a,300\n"
    items = "".join(json.dumps({"item_id": i, "title": i}) + "\n" for i in "ab")
    with caplog.at_level(logging.WARNING):
        raw = read_dataset(_generic(tmp_path / "d", inter, items))
    assert raw.times is None
    message = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "'yesterday'" in message and "1 in this block of 3 rows" in message and "random items" in message


def test_exact_duplicate_rows_are_kept_and_counted(tmp_path, caplog):
    from sidrec.data import read_dataset

    inter = "user_id,item_id,timestamp\nu1,a,100\nu1,a,100\nu1,b,200\nu2,a,100\nu1,b,200\nu1,a,150\n"
    items = "".join(json.dumps({"item_id": i, "title": i}) + "\n" for i in "ab")
    with caplog.at_level(logging.WARNING):
        raw = read_dataset(_generic(tmp_path / "d", inter, items))
    assert len(raw.item_codes) == 6  # kept
    assert any("2 row(s) repeat an earlier row exactly (same user, item and timestamp)" in r.getMessage()
               for r in caplog.records)


def test_a_cold_share_that_leaves_almost_no_warm_items_is_refused(tmp_path):
    src = write_slice(shared("amazon2014_beauty"), tmp_path / "src", 20)
    with pytest.raises(ValueError, match=r"cold_items.*\[0, 0.5\]"):
        cli_main_raising(["prepare", "--dataset", str(src), "--out", str(tmp_path / "r"), "--cold-items", "0.999"])


def test_evaluate_out_that_is_a_file_is_refused_before_scoring(run, tmp_path, capsys):
    from sidrec.eval.evaluate import main

    (tmp_path / "report").write_text("x")
    with pytest.raises(SystemExit):
        main(["--run", str(run), "--out", str(tmp_path / "report")])
    assert "is a file; give a folder" in capsys.readouterr().err


def test_evaluate_beam_size_below_the_list_length_is_an_error(run):
    from sidrec.eval.evaluate import evaluate_run, main

    with pytest.raises(SystemExit):
        main(["--run", str(run), "--beam-size", "5"])
    with pytest.raises(ValueError, match="beam_size 5 is below the 20 items"):
        evaluate_run(run, beam_size=5)
    # by default the checkpoint's own beam, widened to the list length: what is recorded is what ran
    config = json.loads((run / "generator" / "config.json").read_text())
    config["beam_size"] = 10
    (run / "generator" / "config.json").write_text(json.dumps(config))
    result = evaluate_run(run, baselines=[], n_boot=0, max_users=5)
    assert result["config"]["beam_size"] == 20


def test_recommend_k_must_be_a_whole_number(run):
    rec = sidrec.Recommender.from_pretrained(run)
    for k in (2.5, "3", True, 0):
        with pytest.raises(ValueError, match="k must be a whole number >= 1"):
            rec.recommend([_first_item(run)], k=k)
    assert len(rec.recommend([_first_item(run)], k=np.int64(2))) == 2


def test_add_items_refuses_none_and_empty_ids(run):
    rec = sidrec.Recommender.from_pretrained(run)
    n = rec.tokenizer.num_items
    for bad in (None, "", "  ", "a\tb"):
        with pytest.raises(ValueError, match=r"new item #0 has (an empty )?item_id"):
            rec.add_items([{"item_id": bad, "title": "x"}])
    assert rec.tokenizer.num_items == n and len(rec.titles) == n  # nothing was added


def test_numpy_ids_are_ids_and_float_ids_are_refused(run):
    rec = sidrec.Recommender.from_pretrained(run)
    numeric = next((i for i in rec.tokenizer.item_ids if i.isdigit()), None)
    first = _first_item(run)
    assert rec.recommend(np.array([first]), k=2) == rec.recommend([first], k=2)  # numpy strings: one history
    if numeric is not None:
        assert rec.recommend([np.int64(int(numeric))], k=2) == rec.recommend([numeric], k=2)
    with pytest.raises(ValueError, match=r"item id 5.0 is a float64; give item ids as strings"):
        rec.recommend([np.float64(5.0)], k=2)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_a_cuda_device_on_a_cpu_machine_is_explained(run):
    with pytest.raises(ValueError, match="no CUDA GPU that torch can use"):
        sidrec.Recommender.from_pretrained(run, device="cuda")


def test_a_new_item_without_text_is_a_warning(run, caplog):
    rec = sidrec.Recommender.from_pretrained(run)
    with caplog.at_level(logging.WARNING):
        rec.add_items([{"item_id": "bare-1"}])
    assert any("1 new item(s) have no text (e.g. 'bare-1')" in r.getMessage() for r in caplog.records)


def test_a_removed_item_cannot_be_added_again_and_the_error_says_why(run):
    rec = sidrec.Recommender.from_pretrained(run)
    first = _first_item(run)
    rec.remove_items([first])
    n = rec.tokenizer.num_items
    with pytest.raises(ValueError, match=rf"{first!r} was removed from this catalog .* add it under a new id"):
        rec.add_items([{"item_id": first, "title": "back"}])
    assert rec.tokenizer.num_items == n


def test_history_ids_with_a_comma_go_in_a_json_list():
    from sidrec.cli import _history_arg

    assert _history_arg("12, 873,40") == ["12", "873", "40"]
    assert _history_arg('["a,b", "c", 7]') == ["a,b", "c", "7"]
    with pytest.raises(ValueError, match="not a JSON list"):
        _history_arg('["a,b"')


def test_an_option_without_its_value_is_named():
    from sidrec.train.generator_config import GeneratorTrainConfig
    from sidrec.utils.config import parse_overrides

    with pytest.raises(ValueError, match=r"--max-steps needs a value \(e.g. --max-steps 100\)"):
        parse_overrides(GeneratorTrainConfig, ["--max-steps", "--lr", "0.1"])
    assert parse_overrides(GeneratorTrainConfig, ["--max-steps", "5", "--lr", "0.1"]) == {"max_steps": "5", "lr": "0.1"}


def test_a_released_folder_reloads_after_add_and_remove_items(run, tmp_path):
    rec = sidrec.Recommender.from_pretrained(run)
    rec.add_items([{"item_id": "new-1", "title": "Rose lip balm", "brand": "Acme"}])
    rec.remove_items([_first_item(run)])
    rec.save_pretrained(tmp_path / "release")
    again = sidrec.Recommender.from_pretrained(tmp_path / "release")
    record = json.loads((tmp_path / "release" / "generator" / "config.json").read_text())["sidrec_provenance"]
    assert record["semantic_ids"] == again.tokenizer.table_record()  # the grown table was recorded on save
    history = [rec.tokenizer.item_ids[1]]
    assert again.recommend(history, k=3) == rec.recommend(history, k=3)
    assert "new-1" in again.tokenizer.item_ids and again.num_items == rec.num_items


def _release_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _fail_at(monkeypatch, rec, step: str) -> None:
    """Make one step of ``Recommender.save_pretrained`` fail: a kill there, or a disk that fills (ENOSPC)."""
    import errno

    import sidrec.api

    def disk_full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if step == "tokenizer":
        monkeypatch.setattr(type(rec.tokenizer), "save_pretrained", disk_full)
    elif step == "generator":
        monkeypatch.setattr(type(rec.model), "save_pretrained", disk_full)
    elif step == "settings":
        monkeypatch.setattr(type(rec.settings), "save", disk_full)
    elif step == "catalog":
        monkeypatch.setattr(sidrec.api, "save_catalog", disk_full)
    else:  # killed in the middle of the generator's weights: half a file written
        from safetensors.torch import save_model

        def half_then_die(model, filename, *args, **kwargs):
            save_model(model, filename, *args, **kwargs)
            Path(filename).write_bytes(Path(filename).read_bytes()[:1000])
            raise KeyboardInterrupt  # what a kill at that moment leaves behind

        monkeypatch.setattr(sys.modules[type(rec.model).save_pretrained.__module__], "save_model", half_then_die)


@pytest.mark.parametrize("step", ["tokenizer", "generator", "weights", "settings", "catalog"])
def test_a_save_that_fails_at_any_step_leaves_the_old_release_whole(run, tmp_path, monkeypatch, step):
    rec = sidrec.Recommender.from_pretrained(run)
    release = tmp_path / "release"
    rec.save_pretrained(release)
    before = _release_bytes(release)
    rec.add_items([{"item_id": "new-1", "title": "Rose lip balm"}])  # the new release would differ
    _fail_at(monkeypatch, rec, step)
    with pytest.raises((OSError, KeyboardInterrupt)):
        rec.save_pretrained(release)
    monkeypatch.undo()
    assert _release_bytes(release) == before  # the old release, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release", "run"]  # nothing half-written beside it
    again = sidrec.Recommender.from_pretrained(release)
    assert "new-1" not in again.tokenizer.item_ids
    rec.save_pretrained(release)  # and the next save works
    assert "new-1" in sidrec.Recommender.from_pretrained(release).tokenizer.item_ids


def test_a_release_is_never_saved_over_a_run_folder_or_other_files(run, tmp_path):
    rec = sidrec.Recommender.from_pretrained(run)
    with pytest.raises(ValueError, match="is a trained run folder"):
        rec.save_pretrained(run)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds notes.txt, which a release does not"):
        rec.save_pretrained(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_full_disk_is_one_line_and_exit_status_1(monkeypatch, caplog):
    import errno

    import sidrec.cli

    def full(_argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/r/generator/model.safetensors")

    monkeypatch.setitem(sidrec.cli.COMMANDS, "prepare", ("prepare", full))
    with caplog.at_level(logging.DEBUG, logger="sidrec"):
        assert sidrec.cli.main(["prepare", "--out", "x"]) == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0].getMessage()
    assert errors[0].getMessage().startswith("/runs/r/generator/model.safetensors: No space left on device (the disk is full")
    assert not any(r.exc_info for r in caplog.records if r.levelno > logging.DEBUG)  # traceback only with -v


def test_a_file_size_limit_during_prepare_is_one_line(tmp_path):
    """A real limit (``ulimit -f``): the write fails with EFBIG, and the CLI says what to do."""
    src = write_slice(shared("amazon2014_beauty"), tmp_path / "src", 200)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000)); "
            "from sidrec.cli import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "prepare", "--dataset", str(src), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "file-size limit" in done.stderr and "Traceback" not in done.stderr


FULL_DISK_SCRIPT = """
import os, shutil, subprocess, sys
from pathlib import Path
import sidrec
from sidrec.cli import main as cli_main
run, disk = Path(sys.argv[1]), Path(sys.argv[2])
release_bytes = sum(f.stat().st_size for d in ("tokenizer", "generator") for f in (run / d).rglob("*") if f.is_file())
size_kb = (release_bytes * 3 // 2) // 1024 + 64  # room for one release and half of another
subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(disk)], check=True)
rec = sidrec.Recommender.from_pretrained(run)
rec.save_pretrained(disk / "release")  # fits
before = {p.relative_to(disk): p.read_bytes() for p in (disk / "release").rglob("*") if p.is_file()}
rec.remove_items([rec.tokenizer.item_ids[0]])
try:
    rec.save_pretrained(disk / "release")  # the temporary sibling fills the disk
except OSError as e:
    print("save failed:", e.strerror)
else:
    sys.exit("the second save fitted: the test sized the disk wrong")
after = {p.relative_to(disk): p.read_bytes() for p in (disk / "release").rglob("*") if p.is_file()}
assert after == before, "the old release changed"
assert sorted(p.name for p in disk.iterdir()) == ["release"], sorted(p.name for p in disk.iterdir())
again = sidrec.Recommender.from_pretrained(disk / "release")
assert again.num_items == rec.num_items + 1  # the old release, removal not saved
code = cli_main(["prepare", "--dataset", sys.argv[3], "--out", str(disk / "run2")])
print("prepare exit", code)
"""


def test_a_real_full_disk_during_save_keeps_the_old_release(run, tmp_path):
    """A real full disk: a small tmpfs mounted in a user namespace (skipped where unshare is not allowed)."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("no user namespaces here: the fake ENOSPC writer tests cover the same paths")
    (tmp_path / "disk").mkdir()
    src = write_slice(shared("amazon2014_beauty"), tmp_path / "src", 3000)  # a dataset that cannot fit either
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK_SCRIPT)
    done = subprocess.run(["unshare", "-rm", sys.executable, str(script), str(run), str(tmp_path / "disk"),
                           str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "save failed: No space left on device" in done.stdout
    assert "prepare exit 1" in done.stdout and "No space left on device (the disk is full" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_second_writer_of_a_stage_refuses_at_once_naming_the_holder(run):
    from sidrec.utils.locks import stage_lock

    with stage_lock(run, "generator"):
        with pytest.raises(ValueError, match=rf"being written by another `generator` stage \(process {os.getpid()} on "
                                             r".*, started 20\d\d-"):
            _train(run, "--overwrite")
        rec = sidrec.Recommender.from_pretrained(run)  # readers never lock
        assert rec.recommend([_first_item(run)], k=2)
        with stage_lock(run, "evaluate"):  # another stage of the same run is another lock
            pass
    with stage_lock(run, "generator"):  # released: the next writer takes it
        pass


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_warning(run, caplog):
    from sidrec.utils.locks import stage_lock

    code = ("import os, sys; from sidrec.utils.locks import stage_lock; lock = stage_lock(sys.argv[1], 'generator'); "
            "lock.__enter__(); os.kill(os.getpid(), 9)")
    died = subprocess.run([sys.executable, "-c", code, str(run)], timeout=120)
    assert died.returncode == -9
    with caplog.at_level(logging.WARNING), stage_lock(run, "generator"):
        pass
    assert any("took over the generator lock of process" in r.getMessage() for r in caplog.records)


def test_sasrec_trained_on_another_dataset_is_refused_by_evaluate(tiny_run, tmp_path):
    from sidrec.eval.evaluate import evaluate_run
    from sidrec.train.sasrec import main as sasrec_main

    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    args = ["--run", str(run), "--epochs", "1", "--max-steps", "1", "--hidden-size", "8", "--valid-max-users", "20"]
    assert sasrec_main(args) == 0
    with pytest.raises(ValueError, match=r"already holds the output of `sidrec sasrec`"):
        sasrec_main(args)
    config = run / "baselines" / "sasrec" / "config.json"
    raw = json.loads(config.read_text())
    raw["provenance"]["dataset_fingerprint"] = "0123456789abcdef"
    config.write_text(json.dumps(raw))
    with pytest.raises(ProvenanceError, match=r"sasrec was built from dataset 0123456789abcdef, but .* is dataset"):
        evaluate_run(run, baselines=["sasrec"], generator=False, n_boot=0, max_users=5)


def test_evaluate_refuses_to_replace_its_metrics_without_overwrite(run, monkeypatch):
    from sidrec.eval.evaluate import main

    monkeypatch.chdir(run.parent)  # a relative --run, as typed
    args = ["--run", run.name, "--baselines", "popularity", "--no-generator", "--bootstrap", "0"]
    assert main([*args, "--max-users", "5"]) == 0
    first = (run / "eval" / "metrics.json").read_bytes()
    with pytest.raises(ValueError, match=r"already holds the output of `sidrec evaluate` \(.*metrics.json\).*--overwrite"):
        main([*args, "--max-users", "6"])
    assert (run / "eval" / "metrics.json").read_bytes() == first
    assert main([*args, "--max-users", "6", "--overwrite"]) == 0
    assert json.loads((run / "eval" / "metrics.json").read_text())["num_users"] == 6


def test_quickstart_refuses_a_used_folder_before_running_anything(run):
    from sidrec.quickstart import check_fresh, main

    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    with pytest.raises(ValueError, match=r"used run folder: dataset \(prepare\), catalog.jsonl \(prepare\), "
                                         r"tokenizer \(tokenize\), generator \(generator\).*--overwrite"):
        main(["--out", str(run)])
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    check_fresh(run.parent / "fresh", ["prepare", "tokenize", "generator", "sasrec", "evaluate"])  # a new folder
