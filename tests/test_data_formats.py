"""Amazon 2018 / 2023 readers and the streaming paths, on small files the tests write themselves."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from sidrec.data import detect_format, prepare, rawio, read_dataset
from sidrec.data import generic as generic_mod
from sidrec.data.prepare import PrepareConfig
from sidrec.data.raw import InteractionLog

TEMPLATE = "Title: {title}; Brand: {brand}"


def _rows(folder: Path) -> list[list[str]]:
    with open(folder / "interactions.csv", newline="") as f:
        return list(csv.reader(f))[1:]


def _items(folder: Path) -> list[dict]:
    return [json.loads(line) for line in open(folder / "items.jsonl")]


def _write(path: Path, lines: list[str]) -> None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def _by_user(ds, prefix: str = "", item_prefix: str = "") -> dict[str, list[str]]:
    return {prefix + u: [item_prefix + ds.item_ids[i] for i in s] for u, s in zip(ds.user_ids, ds.sequences, strict=True)}


def _amazon2023(folder: Path, beauty_slice: Path, *, gz_meta: bool = True) -> Path:
    """The Beauty slice in the 2023 layout: All_Beauty.jsonl + meta_All_Beauty.jsonl.gz (ms timestamps)."""
    folder.mkdir()
    _write(folder / "All_Beauty.jsonl", [json.dumps(
        {"rating": 5.0, "title": "ok", "text": "fine", "images": [], "asin": f"V{i}", "parent_asin": f"P{i}",
         "user_id": f"U{u}", "timestamp": int(ts) * 1000, "helpful_vote": 0, "verified_purchase": True})
        for u, i, ts in _rows(beauty_slice)])
    meta = []
    for obj in _items(beauty_slice):
        meta.append(json.dumps({
            "main_category": "All Beauty", "title": obj["title"], "features": ["a feature"], "description": [],
            "categories": obj["categories"][0] if obj["categories"] else [], "details": {"Item Form": "Cream"},
            "store": obj.get("brand"), "parent_asin": f"P{obj['item_id']}", "images": [], "videos": [],
            "price": None, "bought_together": None}))
    _write(folder / ("meta_All_Beauty.jsonl.gz" if gz_meta else "meta_All_Beauty.jsonl"), meta)
    return folder


def _amazon2018(folder: Path, beauty_slice: Path, name: str = "Beauty") -> Path:
    """The Beauty slice in the 2018 layout: <name>.json.gz + meta_Beauty.json.gz (strict JSON lines)."""
    folder.mkdir()
    _write(folder / f"{name}.json.gz", [json.dumps(
        {"overall": 5.0, "verified": True, "reviewTime": "01 1, 2014", "reviewerID": f"U{u}", "asin": f"A{i}",
         "unixReviewTime": int(ts), "reviewText": "fine"}) for u, i, ts in _rows(beauty_slice)])
    meta = []
    for obj in _items(beauty_slice):
        meta.append(json.dumps({"asin": f"A{obj['item_id']}", "title": obj["title"], "brand": obj.get("brand") or "",
                                "category": obj["categories"][0] if obj["categories"] else [],
                                "description": ["one", "two"], "feature": [], "price": "$9.99", "imageURL": []}))
    _write(folder / "meta_Beauty.json.gz", meta)
    return folder


def test_amazon2023_reader_matches_generic(tmp_path, beauty_slice):
    folder = _amazon2023(tmp_path / "a23", beauty_slice)
    assert detect_format(folder) == "amazon2023"
    raw = read_dataset(folder)
    assert raw.name == "amazon2023_all_beauty"
    cfg = PrepareConfig(text_template=TEMPLATE)
    ours, _ = prepare(raw, cfg)
    generic, _ = prepare(read_dataset(beauty_slice), cfg)
    # same per-user sequences (time order, ties in file order) and the same text for every item
    assert _by_user(ours) == _by_user(generic, "U", "P")
    texts = dict(zip(generic.item_ids, generic.item_texts, strict=True))
    assert all(texts[i[1:]] == t for i, t in zip(ours.item_ids, ours.item_texts, strict=True))
    # store -> brand, the flat category list -> one path, details rendered as key: value
    item = raw.item_meta[ours.item_ids[0]]
    assert item["categories"] is None or isinstance(item["categories"][0], list)
    rendered, _ = prepare(raw, PrepareConfig(text_template="{categories} | {details} | {features}"))
    assert rendered.item_texts[0].endswith("Item Form: Cream | a feature")


def test_amazon2018_reader_matches_generic(tmp_path, beauty_slice):
    folder = _amazon2018(tmp_path / "a18", beauty_slice)
    assert detect_format(folder) == "amazon2018"
    cfg = PrepareConfig(text_template=TEMPLATE)
    ours, _ = prepare(read_dataset(folder), cfg)
    generic, _ = prepare(read_dataset(beauty_slice), cfg)
    assert _by_user(ours) == _by_user(generic, "U", "A")
    texts = dict(zip(generic.item_ids, generic.item_texts, strict=True))
    assert all(texts[i[1:]] == t for i, t in zip(ours.item_ids, ours.item_texts, strict=True))
    five = _amazon2018(tmp_path / "a18_5", beauty_slice, name="Beauty_5")  # the 5-core download's name
    assert detect_format(five) == "amazon2018" and read_dataset(five).name == "amazon2018_beauty"


def test_amazon_order_is_user_then_time_ties_in_file_order(tmp_path):
    folder = tmp_path / "a23"
    folder.mkdir()
    reviews = [("u2", "a", 5), ("u1", "c", 9), ("u1", "a", 3), ("u2", "b", 5), ("u1", "b", 9), ("u2", "c", 1)]
    _write(folder / "X.jsonl", [json.dumps({"user_id": u, "parent_asin": i, "timestamp": t}) for u, i, t in reviews])
    _write(folder / "meta_X.jsonl", [json.dumps({"parent_asin": i, "title": i.upper()}) for i in "abcd"])
    raw = read_dataset(folder)
    assert raw.user_vocab == ["u1", "u2"]  # users sorted by id
    assert raw.items == ["a", "c", "b", "c", "a", "b"]  # by time; ties (9, 9 and 5, 5) in file order
    assert raw.meta_without_interactions == 1  # item d: nobody reviewed it
    _, dropped = prepare(raw)
    assert dropped["items_without_interactions"] == 1


def _reject_second_review_line(folder, reviews: str, good: str, line: str, meta: str, meta_row: str, match: str):
    """A reviews file whose first line is good and second is ``line``, beside its meta file: reading it fails
    with ``match`` (the file and line named)."""
    folder.mkdir()
    _write(folder / reviews, [good, line])
    _write(folder / meta, [meta_row])
    with pytest.raises(ValueError, match=match):
        read_dataset(folder)


@pytest.mark.parametrize(("line", "match"), [
    ('{"user_id": "u1", "timestamp": 5}', r"X\.jsonl, line 2: missing field 'parent_asin'"),
    ('{"user_id": "u1", "parent_asin": "a", "timestamp": "soon"}', r"X\.jsonl, line 2: field 'timestamp' must be an integer"),
    ('{"user_id": "u1", "parent_asin": "a", timestamp: 5}', r"X\.jsonl, line 2: not valid JSON"),
    ('["u1", "a", 5]', r"X\.jsonl, line 2: expected a JSON object"),
    ('{"user_id": "", "parent_asin": "a", "timestamp": 5}', r"X\.jsonl, line 2: missing field 'user_id'"),
])
def test_amazon2023_bad_review_lines_name_file_and_line(tmp_path, line, match):
    _reject_second_review_line(tmp_path / "a23", "X.jsonl", '{"user_id": "u0", "parent_asin": "a", "timestamp": 1}',
                               line, "meta_X.jsonl", '{"parent_asin": "a", "title": "A"}', match)


@pytest.mark.parametrize(("line", "match"), [
    ('{"reviewerID": "u1", "unixReviewTime": 5}', r"Beauty\.json\.gz, line 2: missing field 'asin'"),
    ('{"reviewerID": "u1", "asin": "a", "unixReviewTime": "soon"}',
     r"Beauty\.json\.gz, line 2: field 'unixReviewTime' must be an integer"),
    ('{"reviewerID": "u1", "asin": "a", unixReviewTime: 5}', r"Beauty\.json\.gz, line 2: not valid JSON"),
    ('["u1", "a", 5]', r"Beauty\.json\.gz, line 2: expected a JSON object"),
    ('{"reviewerID": "u1", "asin": "zz", "unixReviewTime": 5}',
     r"Beauty\.json\.gz, line 2: reviewed item 'zz' \(asin\) has no row in meta_Beauty\.json\.gz"),
])
def test_amazon2018_bad_review_lines_name_file_and_line(tmp_path, line, match):
    folder = tmp_path / "a18"
    _reject_second_review_line(folder, "Beauty.json.gz", '{"reviewerID": "u0", "asin": "a", "unixReviewTime": 1}',
                               line, "meta_Beauty.json.gz", '{"asin": "a", "title": "A"}', match)
    (folder / "meta_Beauty.json.gz").unlink()
    with pytest.raises(ValueError, match=r"missing meta_Beauty\.json\.gz next to Beauty\.json\.gz"):
        read_dataset(folder, "amazon2018")


def test_amazon2023_review_without_meta_names_the_line_and_the_fix(tmp_path):
    folder = tmp_path / "a23"
    folder.mkdir()
    _write(folder / "X.jsonl", ['{"user_id": "u0", "parent_asin": "a", "timestamp": 1}', "",
                                '{"user_id": "u0", "parent_asin": "zz", "timestamp": 2}'])
    _write(folder / "meta_X.jsonl", ['{"parent_asin": "a", "title": "A"}'])
    with pytest.raises(ValueError, match=r"X\.jsonl, line 3: reviewed item 'zz' \(parent_asin\) has no row in "
                                         r"meta_X\.jsonl .*use the meta file of the same category"):
        read_dataset(folder)


def test_amazon2023_numeric_ids_and_duplicate_meta_rows(tmp_path, caplog):
    """pyarrow refuses numbers where it expects strings: the line-by-line path reads them as strings."""
    folder = tmp_path / "a23"
    folder.mkdir()
    _write(folder / "X.jsonl.gz", [json.dumps({"user_id": 7, "parent_asin": "a", "timestamp": t}) for t in (3, 1, 2)])
    _write(folder / "meta_X.jsonl", ['{"parent_asin": "a", "title": "first"}', '{"parent_asin": "a", "title": "second"}'])
    with caplog.at_level(logging.WARNING):
        raw = read_dataset(folder)
    assert raw.user_vocab == ["7"] and raw.item_meta["a"]["title"] == "first"
    assert "1 duplicate parent_asin row(s) skipped" in caplog.text


def test_empty_and_broken_files(tmp_path):
    folder = tmp_path / "a23"
    folder.mkdir()
    (folder / "X.jsonl").write_text("\n \n")
    _write(folder / "meta_X.jsonl", ['{"parent_asin": "a"}'])
    with pytest.raises(ValueError, match=r"X\.jsonl: the file is empty"):
        read_dataset(folder, "amazon2023")
    (folder / "X.jsonl").unlink()
    (folder / "X.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"X\.jsonl\.gz: not a valid gzip file"):
        read_dataset(folder, "amazon2023")
    (folder / "X.jsonl.gz").unlink()
    (folder / "X.jsonl").write_bytes(b'{"user_id": "u", "parent_asin": "a", "timestamp": 1}\n{"user_id": "\xff"}\n')
    with pytest.raises(ValueError, match=r"X\.jsonl, line 2: bytes that are not valid utf-8"):
        read_dataset(folder, "amazon2023")
    (folder / "meta_X.jsonl").unlink()
    with pytest.raises(ValueError, match=r"missing meta_X\.jsonl\[\.gz\] next to X\.jsonl"):
        read_dataset(folder, "amazon2023")


def test_streaming_in_small_blocks_gives_the_same_dataset(tmp_path, beauty_slice, monkeypatch):
    """Chunk boundaries (pyarrow blocks, Python chunks) do not change the result."""
    a23 = _amazon2023(tmp_path / "a23", beauty_slice, gz_meta=False)
    whole_generic = read_dataset(beauty_slice)
    whole_a23 = read_dataset(a23)
    monkeypatch.setattr(rawio, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(generic_mod, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(generic_mod, "PY_CHUNK_ROWS", 7)
    for whole, folder in ((whole_generic, beauty_slice), (whole_a23, a23)):
        small = read_dataset(folder)
        assert small.user_vocab == whole.user_vocab and small.item_vocab == whole.item_vocab
        np.testing.assert_array_equal(small.user_codes, whole.user_codes)
        np.testing.assert_array_equal(small.item_codes, whole.item_codes)


def test_generic_csv_that_pyarrow_refuses_is_read_line_by_line(tmp_path):
    """Ragged rows (extra columns), quoted commas, padding and a BOM: the csv module's reading, as before."""
    (tmp_path / "interactions.csv").write_text(
        "\ufeffuser_id , item_id,timestamp\n u1 ,a,1,extra\nu1,\"b,2\",2\n\nu1,c,3\nu2,a,4\n", encoding="utf-8")
    (tmp_path / "items.jsonl").write_text("".join(json.dumps({"item_id": i, "title": i}) + "\n"
                                                  for i in ("a", "b,2", "c", "unused")))
    raw = read_dataset(tmp_path)
    assert raw.users == ["u1", "u1", "u1", "u2"] and raw.items == ["a", "b,2", "c", "a"]
    assert raw.meta_without_interactions == 1
    with gzip.open(tmp_path / "interactions.csv.gz", "wt") as f:
        f.write("user_id,item_id\nu1,a\nu1,c\n")
    (tmp_path / "interactions.csv").unlink()
    assert read_dataset(tmp_path).items == ["a", "c"]


_ROWS = "".join(f"u{n % 3},{'abc'[n % 3]},{n}\n" for n in range(3000))  # ~25 KB: several 4 KB blocks


@pytest.mark.parametrize("block", [16 << 20, 4096])
@pytest.mark.parametrize(("bad", "match"), [
    ('u9,a,"1"2\n', r"line 3002: not valid CSV \(',' expected after '\"'\)"),  # pyarrow reads "1"2 as 12
    ('u9,a,"1\n', r"line 3002: not valid CSV \(unexpected end of data\); a quoted field is never closed"),
    ("u9,a," + "9" * 200_000 + "\n", r"line 3002: not valid CSV \(field larger than field limit"),
    ("u9,a,1\rb,c\n", r"line 3002: not valid CSV \(new-line character seen in unquoted field"),
])
def test_generic_csv_errors_outside_the_id_columns_are_the_csv_modules(tmp_path, monkeypatch, block, bad, match):
    """What strict csv refuses but pyarrow reads (in a column the fast path does not even decode) is an error
    naming the line, at any block size, not a silently different dataset."""
    monkeypatch.setattr(generic_mod, "BLOCK_BYTES", block)
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\n" + _ROWS + bad + "u1,b,5\n")
    (tmp_path / "items.jsonl").write_text("".join(json.dumps({"item_id": i}) + "\n" for i in "abc"))
    with pytest.raises(ValueError, match=r"interactions\.csv, " + match) as err:
        read_dataset(tmp_path)
    assert len(str(err.value)) < 400


@pytest.mark.parametrize("block", [16 << 20, 4096])
def test_generic_csv_fast_path_and_csv_module_read_the_same_rows(tmp_path, monkeypatch, block):
    """Quoted fields (fully quoted, as R writes them), CRLF ends and a long line under the limit: the csv
    module's rows, whichever path reads them."""
    monkeypatch.setattr(generic_mod, "BLOCK_BYTES", block)
    (tmp_path / "items.jsonl").write_text("".join(json.dumps({"item_id": i}) + "\n" for i in ("a", "b", "c", "a,b")))
    cases = {
        "plain": "user_id,item_id,ts\n" + _ROWS,
        "crlf": ("user_id,item_id,ts\n" + _ROWS).replace("\n", "\r\n"),
        "quoted": '"user_id","item_id","ts"\n' + "".join(f'"u{n % 3}","{"abc"[n % 3]}","{n}"\n' for n in range(3000))
        + '"u1","a,b","x ""y"" z"\n',
        "long": "user_id,item_id,ts\n" + _ROWS + "u1,b," + "9" * 100_000 + "\n",
    }
    for name, text in cases.items():
        (tmp_path / "interactions.csv").write_bytes(text.encode())
        rows = [r for r in csv.reader(io.StringIO(text.replace("\r\n", "\n")))][1:]
        raw = read_dataset(tmp_path)
        assert list(zip(raw.users, raw.items, strict=True)) == sorted(
            ((u, i) for u, i, _ in rows), key=lambda r: int(r[0][1:])), name


def test_interaction_log_encodes_chunks_against_one_vocabulary():
    log = InteractionLog()
    log.add(["u2", "u1"], ["a", "b"])
    log.add(["u1", "u3", "u2"], ["c", "a", "b"])
    raw = log.finish(name="x", item_meta={})
    assert raw.user_vocab == ["u2", "u1", "u3"]  # first appearance
    assert raw.items == ["a", "b", "b", "c", "a"]  # grouped by user, file order within a user
    assert raw.item_vocab == ["a", "b", "c"]
    with pytest.raises(ValueError, match="closed"):
        log.add(["u9"], ["z"])


@pytest.mark.parametrize(("n", "users", "span"), [(2000, 10, 5), (5000, 300, 10**12), (3000, 2**21, 2**45)])
def test_user_time_order_equals_lexsort_with_ties_in_row_order(n, users, span):
    """The fast (one int64 key) and the fallback (arrow two-key) orders both equal np.lexsort."""
    from sidrec.data.raw import _user_time_order

    rng = np.random.default_rng(n)
    u = rng.integers(0, users, size=n).astype(np.int32)
    t = rng.integers(10**12, 10**12 + span, size=n)
    np.testing.assert_array_equal(_user_time_order(u, t, users), np.lexsort((t, u)))


def test_flat_sequences_read_like_lists():
    from sidrec.data.dataset import FlatSequences

    seqs = FlatSequences(np.array([5, 6, 7, 1, 2]), np.array([0, 3, 3, 5]))
    assert len(seqs) == 3 and seqs[0] == [5, 6, 7] and seqs[1] == [] and seqs[-1] == [1, 2]
    assert list(seqs) == [[5, 6, 7], [], [1, 2]] and seqs[1:] == [[], [1, 2]]
    assert seqs == [[5, 6, 7], [], [1, 2]] and seqs != [[5, 6, 7], [], [1]]
    assert seqs.lengths().tolist() == [3, 0, 2]
    with pytest.raises(IndexError):
        seqs[3]
    with pytest.raises(ValueError, match="offsets"):
        FlatSequences(np.array([1, 2]), np.array([0, 1]))
