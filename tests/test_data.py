"""Dataset layer: known stats on real data, split invariants, raw-format readers, and bad input."""

from __future__ import annotations

import csv
import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import shared, write_slice

from sidrec.cli import main as cli_main
from sidrec.data import PreparedDataset, bundled_path, load_raw, prepare, read_dataset, render_item_text
from sidrec.data.prepare import PrepareConfig

BEAUTY_STATS = {"users": 22363, "items": 12101, "interactions": 198502}


@pytest.fixture(scope="module")
def beauty():
    dataset, dropped = prepare(load_raw("beauty"))
    return dataset, dropped


def test_bundled_beauty_has_known_stats(beauty):
    dataset, dropped = beauty
    stats = dataset.stats()
    assert {k: stats[k] for k in BEAUTY_STATS} == BEAUTY_STATS
    assert (stats["seq_len_min"], stats["seq_len_max"], stats["seq_len_mean"]) == (5, 204, 8.88)
    assert stats["items_without_text"] == 0
    assert not any(dropped.values())
    assert (bundled_path("beauty") / "SOURCE.md").is_file()


def test_bundled_beauty_equals_shared_copy(beauty):
    dataset, _ = beauty
    direct, _ = prepare(read_dataset(shared("amazon2014_beauty")))
    assert direct.fingerprint() == dataset.fingerprint()


def test_leave_one_out_invariants(beauty):
    dataset, _ = beauty
    train = dataset.train_sequences()
    valid, test = dataset.eval_split("valid"), dataset.eval_split("test")
    for u, seq in enumerate(dataset.sequences):
        assert len(train[u]) == len(seq) - 2  # each user loses exactly two items
        assert valid.histories[u] == train[u]
        assert test.histories[u] == train[u] + [int(valid.targets[u])]
        held_out = {int(valid.targets[u]), int(test.targets[u])}
        assert not held_out & set(train[u])  # Beauty has no repeats: nothing leaks into train
    assert valid.targets.shape == test.targets.shape == (dataset.num_users,)


def test_eval_split_sample_keeps_rows_aligned(beauty):
    """Seeding and order are tested in test_eval_e2e; here: every row still belongs to its user."""
    dataset, _ = beauty
    valid = dataset.eval_split("valid")
    a = valid.sample(500, seed=3)
    for h, t, u in zip(a.histories, a.targets, a.user_index, strict=True):  # rows stay aligned
        assert h == valid.histories[u] and t == valid.targets[u]
    assert valid.sample(None) is valid and valid.sample(10**9) is valid
    with pytest.raises(ValueError, match="at least 1"):
        valid.sample(0)


def test_save_load_roundtrip(tmp_path, tiny_run):
    dataset = PreparedDataset.load(tiny_run)
    assert dataset.num_users == 300
    dataset.save(tmp_path)
    again = PreparedDataset.load(tmp_path)
    assert again.fingerprint() == dataset.fingerprint()
    assert again.sequences == dataset.sequences and again.item_texts == dataset.item_texts


def test_ml100k_known_stats_and_split():
    dataset, _ = prepare(read_dataset(shared("movielens_100k")))
    stats = dataset.stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100000)
    assert (stats["seq_len_min"], stats["seq_len_max"]) == (20, 737)
    for seq, tr in zip(dataset.sequences, dataset.train_sequences(), strict=True):
        assert len(tr) == len(seq) - 2 and not {seq[-1], seq[-2]} & set(tr)


def test_cli_prepare_prints_known_stats(tmp_path, capsys):
    assert cli_main(["prepare", "--dataset", "beauty", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "22,363" in out and "12,101" in out and "198,502" in out and "5 / 6 / 8.88 / 204" in out
    assert PreparedDataset.load(tmp_path / "run").num_items == 12101


def test_item_text_template_skips_missing_fields():
    item = {"title": "Lip Balm", "brand": None, "categories": [["Beauty", "Lips"], ["Beauty", "Care"]], "price": ""}
    assert render_item_text(item) == "Title: Lip Balm; Categories: Beauty > Lips, Beauty > Care"
    assert render_item_text(item, "{title} by {brand}") == "Lip Balm by"  # one segment: kept, stripped
    assert render_item_text({}, "Title: {title}") == ""


def test_kcore_filter(beauty_slice):
    raw = load_raw(str(beauty_slice))
    dataset, dropped = prepare(raw, PrepareConfig(min_user_count=5, min_item_count=2))
    counts = np.bincount(np.concatenate([np.asarray(s) for s in dataset.sequences]), minlength=dataset.num_items)
    assert counts.min() >= 2 and min(len(s) for s in dataset.sequences) >= 5
    assert dropped["interactions"] > 0


# ----------------------------------------------------------------------------- raw formats


def _rows(folder: Path) -> list[list[str]]:
    with open(folder / "interactions.csv", newline="") as f:
        return list(csv.reader(f))[1:]


def test_amazon2014_raw_reader_matches_generic(tmp_path, beauty_slice):
    rows = _rows(beauty_slice)
    raw_dir = tmp_path / "amazon"
    raw_dir.mkdir()
    with gzip.open(raw_dir / "reviews_Beauty_5.json.gz", "wt") as f:
        for u, i, ts in rows:
            f.write(json.dumps({"reviewerID": f"U{u}", "asin": f"A{i}", "unixReviewTime": int(ts), "overall": 5.0}) + "\n")
    with gzip.open(raw_dir / "meta_Beauty.json.gz", "wt") as f:
        for line in open(beauty_slice / "items.jsonl"):
            obj = json.loads(line)
            meta = {"asin": f"A{obj['item_id']}", "title": obj["title"], "categories": obj["categories"]}
            if obj.get("brand"):
                meta["brand"] = obj["brand"]
            f.write(repr(meta) + "\n")  # Python-literal lines, as Amazon ships them
    amazon, _ = prepare(read_dataset(raw_dir))
    generic, _ = prepare(read_dataset(beauty_slice))
    def by_user(ds, prefix=""):
        return {prefix + u: [ds.item_ids[i] for i in s] for u, s in zip(ds.user_ids, ds.sequences, strict=True)}

    # Same per-user sequences (time order, ties in file order) and the same text for every item.
    assert by_user(amazon) == {u: ["A" + i for i in s] for u, s in by_user(generic, "U").items()}
    texts = dict(zip(generic.item_ids, generic.item_texts, strict=True))
    assert all(texts[i[1:]] == t for i, t in zip(amazon.item_ids, amazon.item_texts, strict=True))


def test_amazon_meta_is_never_evaluated(tmp_path):
    (tmp_path / "reviews_X_5.json").write_text('{"reviewerID": "u", "asin": "a", "unixReviewTime": 1}\n')
    (tmp_path / "meta_X.json").write_text("__import__('os').system('echo pwned')\n")
    with pytest.raises(ValueError, match=r"meta_X\.json, line 1"):
        read_dataset(tmp_path)


def test_movielens_raw_readers(tmp_path):
    src = write_slice(shared("movielens_100k"), tmp_path / "src", 30)
    rows = _rows(src)
    items = [json.loads(line) for line in open(src / "items.jsonl")]
    ml1m, ml100k = tmp_path / "ml-1m", tmp_path / "ml-100k"
    ml1m.mkdir()
    ml100k.mkdir()
    with open(ml1m / "ratings.dat", "w", encoding="latin-1") as f:
        for u, i, ts, r in rows:
            f.write(f"{u}::{i}::{r}::{ts}\n")
    with open(ml1m / "movies.dat", "w", encoding="latin-1") as f:
        for it in items:
            f.write(f"{it['item_id']}::{it['title']}::{'|'.join(it['categories'])}\n")
    with open(ml100k / "u.data", "w", encoding="latin-1") as f:
        for u, i, ts, r in rows:
            f.write(f"{u}\t{i}\t{r}\t{ts}\n")
    genres = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
              "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
              "War", "Western"]
    with open(ml100k / "u.item", "w", encoding="latin-1") as f:
        for it in items:
            flags = "|".join("1" if g in it["categories"] else "0" for g in genres)
            f.write(f"{it['item_id']}|{it['title']}|01-Jan-1995||http://x|{flags}\n")
    generic, _ = prepare(read_dataset(src))
    for folder in (ml1m, ml100k):
        ds, _ = prepare(read_dataset(folder))
        # Same users and the same multiset of items each; order follows timestamps (ties may differ).
        assert ds.user_ids == generic.user_ids
        for a, b in zip(ds.sequences, generic.sequences, strict=True):
            assert sorted(ds.item_ids[i] for i in a) == sorted(generic.item_ids[i] for i in b)
        assert ds.item_texts[0].startswith("Title: ")


# ----------------------------------------------------------------------------- bad input


def _generic(tmp_path: Path, inter: str | bytes, items: str | bytes) -> Path:
    for name, content in (("interactions.csv", inter), ("items.jsonl", items)):
        p = tmp_path / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return tmp_path


ITEMS = '{"item_id": "a", "title": "A"}\n{"item_id": "b", "title": "B"}\n{"item_id": "c", "title": null}\n'
INTER = "user_id,item_id\nu1,a\nu1,b\nu1,c\n"


def test_missing_column(tmp_path):
    with pytest.raises(ValueError, match=r"interactions\.csv, line 1: missing column\(s\) item_id"):
        read_dataset(_generic(tmp_path, "user_id,product\nu1,a\n", ITEMS))


def test_interaction_without_item_metadata(tmp_path):
    with pytest.raises(ValueError, match=r"interactions\.csv, line 3: item 'zz' has no row in items\.jsonl"):
        read_dataset(_generic(tmp_path, "user_id,item_id\nu1,a\nu1,zz\n", ITEMS))


def test_duplicate_item_ids(tmp_path):
    with pytest.raises(ValueError, match=r"items\.jsonl, line 3: duplicate item_id 'a'"):
        read_dataset(_generic(tmp_path, INTER, ITEMS.replace('"c"', '"a"')))


def test_empty_file(tmp_path):
    with pytest.raises(ValueError, match=r"interactions\.csv: the file is empty"):
        read_dataset(_generic(tmp_path, "", ITEMS))


def test_undecodable_bytes(tmp_path):
    with pytest.raises(ValueError, match=r"items\.jsonl, line 2: bytes that are not valid utf-8"):
        read_dataset(_generic(tmp_path, INTER, b'{"item_id": "a"}\n{"item_id": "b", "title": "\xff\xfe"}\n'))


def test_bad_json_line(tmp_path):
    with pytest.raises(ValueError, match=r"items\.jsonl, line 1: not valid JSON"):
        read_dataset(_generic(tmp_path, INTER, "{item_id: a}\n"))


def test_short_users_are_dropped_and_counted(tmp_path, caplog):
    inter = INTER + "u2,a\nu2,b\nu3,c\n"
    with caplog.at_level(logging.WARNING):
        dataset, dropped = prepare(read_dataset(_generic(tmp_path, inter, ITEMS)))
    assert dataset.user_ids == ["u1"] and dropped["users_too_short"] == 2
    assert "dropped 2 user(s) with fewer than 3 interactions" in caplog.text


def test_all_users_too_short_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no user has 3 or more interactions"):
        prepare(read_dataset(_generic(tmp_path, "user_id,item_id\nu1,a\nu1,b\n", ITEMS)))


def test_items_without_text_are_counted_not_dropped(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        dataset, _ = prepare(read_dataset(_generic(tmp_path, INTER, ITEMS)))
    assert dataset.num_items == 3 and dataset.stats()["items_without_text"] == 1
    assert "1 item(s) have no text" in caplog.text


def test_unknown_dataset_and_format(tmp_path):
    with pytest.raises(ValueError, match="neither a bundled name"):
        load_raw(str(tmp_path / "nope"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="unrecognised dataset folder"):
        read_dataset(tmp_path)


def test_bad_template_is_rejected():
    with pytest.raises(ValueError, match="names no field"):
        prepare(load_raw("beauty"), PrepareConfig(text_template="no fields here"))


def test_load_without_prepare_says_what_to_run(tmp_path):
    with pytest.raises(ValueError, match="run `sidrec prepare"):
        PreparedDataset.load(tmp_path)
