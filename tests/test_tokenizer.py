"""SemanticIdTokenizer (table, collisions, save/load, cold start), embeddings cache and the entry point."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import small_config

from sidrec.tokenizer import SemanticIdTokenizer, embed_texts
from sidrec.tokenizer import embeddings as emb_mod
from sidrec.tokenizer.embeddings import embedding_cache_key

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # every test here fits or trains

STATS_KEYS = {"method", "num_items", "num_levels", "codebook_size", "level_usage", "level_perplexity",
              "unique_before_collision", "max_collision_group", "recon_cosine", "fit_seconds"}


def _fit(items, emb, method="rqkmeans", **overrides) -> SemanticIdTokenizer:
    from sidrec.data import DEFAULT_TEMPLATE

    return SemanticIdTokenizer.fit(item_ids=[it["item_id"] for it in items], embeddings=emb,
                                   config=small_config(method, **overrides), text_template=DEFAULT_TEMPLATE)


@pytest.fixture(scope="module")
def tok(beauty_items, beauty_emb) -> SemanticIdTokenizer:  # noqa: F811
    return _fit(beauty_items, beauty_emb)


def _assert_valid_table(t: SemanticIdTokenizer) -> None:
    assert t.codes.dtype == np.int64 and t.codes.shape == (t.num_items, len(t.level_sizes))
    assert len({tuple(r) for r in t.codes.tolist()}) == t.num_items  # every full ID is unique
    assert (t.codes < np.asarray(t.level_sizes)).all()
    # the last column numbers the items sharing a semantic prefix: 0 when the prefix is unique
    prefixes = [tuple(r) for r in t.codes[:, :-1].tolist()]
    counts = {p: prefixes.count(p) for p in set(prefixes)}
    for p, c in zip(prefixes, t.codes[:, -1].tolist(), strict=True):
        assert c < counts[p]
        if counts[p] == 1:
            assert c == 0


def test_table_is_unique_and_stats_complete(tok, beauty_items):  # noqa: F811
    assert tok.item_ids == [it["item_id"] for it in beauty_items]
    _assert_valid_table(tok)
    assert STATS_KEYS <= set(tok.stats)
    s = tok.stats
    assert s["num_items"] == 600 and s["num_levels"] == 3 and s["codebook_size"] == 16
    assert tok.level_sizes[-1] == max(s["max_collision_group"], 8)
    assert 0 < s["unique_before_collision"] <= 1 and len(s["level_usage"]) == 3


@pytest.mark.parametrize("method", ["rqkmeans", "rqvae", "fsq"])
def test_identical_embeddings_get_distinct_ids(beauty_emb, method):  # noqa: F811
    emb = np.concatenate([beauty_emb[:100], np.repeat(beauty_emb[:1], 5, axis=0)])  # item 0 + 5 copies
    t = SemanticIdTokenizer.fit(item_ids=[f"i{i}" for i in range(len(emb))], embeddings=emb,
                                config=small_config(method, rqvae_epochs=5, fsq_epochs=5))
    _assert_valid_table(t)
    copies = t.codes[[0, *range(100, 105)]]
    assert (copies[:, :-1] == copies[0, :-1]).all()
    assert len(set(copies[:, -1].tolist())) == 6  # same semantic codes, distinct collision indices
    # with re-assignment the copies spread over free last-level codes first; IDs stay distinct
    t = SemanticIdTokenizer.fit(item_ids=[f"i{i}" for i in range(len(emb))], embeddings=emb,
                                config=small_config(method, rqvae_epochs=5, fsq_epochs=5, collision_strategy="reassign"))
    _assert_valid_table(t)
    copies = t.codes[[0, *range(100, 105)]]
    assert len({tuple(r) for r in copies.tolist()}) == 6 and (copies[:, :-2] == copies[0, :-2]).all()


def test_reassign_strategy_raises_uniqueness(beauty_items, beauty_emb, tok):  # noqa: F811
    t = _fit(beauty_items, beauty_emb, collision_strategy="reassign")
    _assert_valid_table(t)
    s = t.stats
    assert s["unique_before_collision_plain"] == tok.stats["unique_before_collision"]
    assert s["reassigned_items"] > 0
    assert s["unique_before_collision"] > tok.stats["unique_before_collision"]


def test_same_seed_same_table(tok, beauty_items, beauty_emb):  # noqa: F811
    np.testing.assert_array_equal(_fit(beauty_items, beauty_emb).codes, tok.codes)


def test_save_load_round_trip(tok, beauty_emb, tmp_path):  # noqa: F811
    tok.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors", "semantic_ids.tsv",
                                                    "stats.json"}
    loaded = SemanticIdTokenizer.from_pretrained(tmp_path)
    assert loaded.item_ids == tok.item_ids
    np.testing.assert_array_equal(loaded.codes, tok.codes)
    assert loaded.level_sizes == tok.level_sizes
    np.testing.assert_array_equal(loaded.quantizer.encode(beauty_emb), tok.quantizer.encode(beauty_emb))
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["embedding_model"] == "all-MiniLM-L6-v2" and cfg["text_template"].startswith("Title: {title}")
    assert STATS_KEYS <= set(json.loads((tmp_path / "stats.json").read_text()))
    first = (tmp_path / "semantic_ids.tsv").read_text().splitlines()[1]
    assert first == tok.item_ids[0] + "\t" + " ".join(map(str, tok.codes[0]))


def test_load_rejects_inconsistent_folder(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["embedding_dim"] = 768
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="embedding_dim 768"):
        SemanticIdTokenizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="has no config.json"):
        SemanticIdTokenizer.from_pretrained(tmp_path / "missing")


def test_assign_keeps_existing_ids(tok, beauty_emb, tmp_path):  # noqa: F811
    tok.save_pretrained(tmp_path)
    t = SemanticIdTokenizer.from_pretrained(tmp_path)
    before = t.codes.copy()
    # new items: exact copies of existing ones (must collide) and a perturbed one
    new_emb = np.concatenate([beauty_emb[[0, 0, 5]], beauty_emb[[7]] + 0.01])
    new = t.assign_embeddings(["n0", "n1", "n2", "n3"], new_emb)
    np.testing.assert_array_equal(t.codes[:600], before)
    assert t.item_ids[600:] == ["n0", "n1", "n2", "n3"] and t.num_items == 604
    np.testing.assert_array_equal(t.codes[600:], new)
    _assert_valid_table(t)
    # the copies of item 0 share its semantic prefix and get the next collision indices
    assert (new[:2, :-1] == before[0, :-1]).all()
    assert new[0, -1] > before[0, -1] and new[1, -1] == new[0, -1] + 1
    with pytest.raises(ValueError, match="already has a semantic ID"):
        t.assign_embeddings(["n0"], beauty_emb[:1])
    with pytest.raises(ValueError, match="appears twice among the new items"):
        t.assign_embeddings(["m", "m"], beauty_emb[:2])
    with pytest.raises(ValueError, match="dimension 10"):
        t.assign_embeddings(["m"], beauty_emb[:1, :10])


def test_assign_overflow_takes_the_nearest_group_with_room(beauty_items, beauty_emb, caplog):  # noqa: F811
    t = _fit(beauty_items, beauty_emb, collision_min_size=2)
    cap = t.level_sizes[-1]
    group = (t.codes[:, :-1] == t.codes[0, :-1]).all(1).sum()
    copies = np.repeat(beauty_emb[:1], cap - group + 1, axis=0)  # one more than the first item's group holds
    with caplog.at_level("INFO"):
        new = t.assign_embeddings([f"c{i}" for i in range(len(copies))], copies)
    _assert_valid_table(t)
    own = tuple(t.codes[0, :-1])
    assert sum(tuple(r[:-1]) == own for r in new.tolist()) == cap - group  # the group filled up
    moved = [r for r in new.tolist() if tuple(r[:-1]) != own]
    assert len(moved) == 1 and moved[0][:-2] == list(own[:-1])  # the nearest last-level code with room
    assert "took the nearest one with room" in caplog.text


def test_assign_overflow_of_every_near_group_is_an_error_and_changes_nothing(beauty_items, beauty_emb):  # noqa: F811
    t = _fit(beauty_items, beauty_emb, collision_min_size=2, reassign_candidates=1)  # only its own group
    cap = t.level_sizes[-1]
    group = (t.codes[:, :-1] == t.codes[0, :-1]).all(1).sum()
    copies = np.repeat(beauty_emb[:1], cap - group + 1, axis=0)
    with pytest.raises(ValueError, match="collision level holds"):
        t.assign_embeddings([f"c{i}" for i in range(len(copies))], copies)
    assert t.num_items == 600 and len(t.codes) == 600


def test_adding_items_is_refused_after_the_chunk_that_overflows(beauty_items, beauty_emb, monkeypatch):  # noqa: F811
    """A catalog that cannot take the items stops embedding at the chunk that overflows; nothing is added."""
    import sidrec.tokenizer.semantic_ids as sid

    t = _fit(beauty_items, beauty_emb, collision_min_size=2, reassign_candidates=1)
    cap = t.level_sizes[-1]
    group = (t.codes[:, :-1] == t.codes[0, :-1]).all(1).sum()
    embedded: list[int] = []

    def fake_embed(texts, **kwargs):  # every new item embeds like item 0: they all want one group
        embedded.append(len(texts))
        return np.repeat(beauty_emb[:1], len(texts), axis=0)

    monkeypatch.setattr(sid, "embed_texts", fake_embed)
    n = 40 * (cap - group + 1)
    with pytest.raises(ValueError, match="nothing was added"):
        t.plan_new_items([(f"n{i}", "same text") for i in range(n)], chunk=cap)
    assert sum(embedded) <= 2 * cap < n and t.num_items == 600  # stopped early, table unchanged


def test_assign_reassign_strategy_prefers_free_code(beauty_items, beauty_emb):  # noqa: F811
    t = _fit(beauty_items, beauty_emb, collision_strategy="reassign", reassign_candidates=16)
    heads = [tuple(r) for r in t.codes[:, :-2].tolist()]
    # an item whose first two codes leave some last-level code free: its copy must land there
    i = next(i for i, h in enumerate(heads) if heads.count(h) < 16)
    new = t.assign_embeddings(["n0"], beauty_emb[[i]])
    _assert_valid_table(t)
    assert new[0, -1] == 0 and tuple(new[0, :-2]) == heads[i] and new[0, -2] != t.codes[i, -2]


def test_assign_embeds_dicts_and_pairs(tok, beauty_items, embedding_cache, tmp_path):  # noqa: F811
    tok.save_pretrained(tmp_path)
    t = SemanticIdTokenizer.from_pretrained(tmp_path)
    fields = {k: v for k, v in beauty_items[3].items() if k != "item_id"}
    from sidrec.data import render_item_text

    text = render_item_text(beauty_items[3], t.text_template)
    new = t.assign([{"item_id": "new-a", **fields}, ("new-b", text)], cache_dir=embedding_cache)
    # same text as existing item 3 -> same semantic prefix, distinct full IDs
    assert (new[:, :-1] == tok.codes[3, :-1]).all()
    assert len({tuple(r) for r in t.codes.tolist()}) == 602
    with pytest.raises(ValueError, match="no 'item_id' key"):
        t.assign([{"title": "x"}])


def test_embed_texts_cache_hit_skips_model(beauty_texts, embedding_cache, beauty_emb, monkeypatch):  # noqa: F811
    from sidrec.data import DEFAULT_TEMPLATE

    def boom(*a, **k):
        raise AssertionError("model loaded despite a cache entry")

    monkeypatch.setattr(emb_mod, "load_embedding_model", boom)
    again = embed_texts(beauty_texts, template=DEFAULT_TEMPLATE, cache_dir=embedding_cache)
    np.testing.assert_array_equal(again, beauty_emb)
    assert embedding_cache_key(beauty_texts, model_name="m", template="a") != embedding_cache_key(
        beauty_texts, model_name="m", template="b")
    assert beauty_emb.dtype == np.float32 and beauty_emb.shape == (600, 384)


def _make_run(tmp_path, items, texts, cache_dir):
    """A run folder with a PreparedDataset of the 600 items and the embedding cache pre-filled."""
    from sidrec.data import DEFAULT_TEMPLATE, PreparedDataset

    ids = [it["item_id"] for it in items]
    ds = PreparedDataset(name="beauty600", item_ids=ids, item_texts=texts, item_titles=[it.get("title") for it in items],
                         user_ids=["u0", "u1"], sequences=[[0, 1, 2], [3, 4, 5]], text_template=DEFAULT_TEMPLATE)
    run = tmp_path / "run"
    ds.save(run)
    key = embedding_cache_key(texts, model_name="all-MiniLM-L6-v2", template=DEFAULT_TEMPLATE)
    (run / "cache").mkdir()
    shutil.copy(cache_dir / f"emb-{key[:24]}.npy", run / "cache")
    return run


def test_entry_point_writes_run_tokenizer(tmp_path, beauty_items, beauty_texts, embedding_cache, beauty_emb):  # noqa: F811
    from sidrec.train.tokenizer import main

    run = _make_run(tmp_path, beauty_items, beauty_texts, embedding_cache)
    assert main(["--run", str(run), "--config", "tokenizer/rqkmeans", "--codebook-size", "16",
                 "--kmeans-niter", "5"]) == 0
    t = SemanticIdTokenizer.from_pretrained(run / "tokenizer")
    assert t.item_ids == [it["item_id"] for it in beauty_items]
    _assert_valid_table(t)
    stats = json.loads((run / "tokenizer" / "stats.json").read_text())
    assert stats["method"] == "rqkmeans" and stats["codebook_size"] == 16
    with pytest.raises(ValueError, match="Did you mean 'codebook_size'"):
        main(["--run", str(run), "--config", "tokenizer/rqkmeans", "--codebok-size", "16"])


@pytest.mark.parametrize("preset", ["tokenizer/rqvae", "tokenizer/rqkmeans", "tokenizer/fsq"])
def test_presets_load(preset):
    from sidrec.tokenizer import TokenizerConfig
    from sidrec.utils import load_config, resolve_config_path

    cfg = load_config(TokenizerConfig, preset)
    assert cfg.method == preset.split("/")[1]
    assert resolve_config_path(preset).read_text().startswith("# python -m sidrec.train.tokenizer")
