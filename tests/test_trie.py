"""CatalogTrie: build, lookup, allowed-code masks, add/remove, errors - checked against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sidrec.decoding import CatalogTrie

SIZES = [4, 3, 5]


def random_catalog(n: int, seed: int, sizes: list[int] = SIZES) -> np.ndarray:
    """n distinct random codes (n, L) in random order."""
    rng = np.random.default_rng(seed)
    space = np.array(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")).reshape(len(sizes), -1).T
    return space[rng.choice(len(space), size=n, replace=False)]


def brute_allowed(codes: np.ndarray, active: np.ndarray, prefix: list[int], size: int) -> np.ndarray:
    """Reference mask: codes that extend ``prefix`` towards at least one active item."""
    mask = np.zeros(size, dtype=bool)
    depth = len(prefix)
    for row, alive in zip(codes, active, strict=True):
        if alive and list(row[:depth]) == prefix:
            mask[row[depth]] = True
    return mask


def check_against_brute_force(trie: CatalogTrie, codes: np.ndarray, active: np.ndarray) -> None:
    """Every prefix of every catalog code (active or not) gets the brute-force mask at every level."""
    paths = trie.paths(codes)  # (n, L)
    for t, size in enumerate(SIZES):
        nodes = torch.from_numpy(paths[:, t])
        got = trie.allowed(t, nodes).numpy()  # (n, C_t)
        for i, row in enumerate(codes):
            np.testing.assert_array_equal(got[i], brute_allowed(codes, active, list(row[:t]), size))


def test_lookup_roundtrip_and_absent_codes() -> None:
    codes = random_catalog(30, seed=0)
    trie = CatalogTrie(codes=codes, level_sizes=SIZES)
    np.testing.assert_array_equal(trie.lookup(codes), np.arange(30))
    absent = random_catalog(60, seed=1)
    present = {tuple(r) for r in codes}
    expected = [list(map(tuple, codes)).index(tuple(r)) if tuple(r) in present else -1 for r in absent]
    np.testing.assert_array_equal(trie.lookup(absent), expected)
    assert trie.num_items == trie.num_active == 30


def test_allowed_masks_match_brute_force() -> None:
    codes = random_catalog(25, seed=2)
    trie = CatalogTrie(codes=codes, level_sizes=SIZES)
    check_against_brute_force(trie, codes, np.ones(25, dtype=bool))


def test_step_follows_codes_to_items() -> None:
    codes = random_catalog(20, seed=3)
    trie = CatalogTrie(codes=codes, level_sizes=SIZES)
    nodes = torch.zeros(20, dtype=torch.long)
    for t in range(len(SIZES)):
        nodes = trie.step(t, nodes, torch.from_numpy(codes[:, t]))
    assert nodes.tolist() == list(range(20))
    # a code outside the catalog leads to -1
    root_mask = trie.allowed(0, torch.zeros(1, dtype=torch.long))[0]
    if not root_mask.all():
        missing = int(torch.nonzero(~root_mask)[0])
        assert trie.step(0, torch.zeros(1, dtype=torch.long), torch.tensor([missing])).item() == -1


def test_remove_prunes_prefixes_and_lookup() -> None:
    codes = random_catalog(30, seed=4)
    trie = CatalogTrie(codes=codes, level_sizes=SIZES)
    rng = np.random.default_rng(5)
    removed = rng.choice(30, size=12, replace=False)
    assert trie.remove_items(removed) == 12
    assert trie.remove_items(removed[:3]) == 0  # idempotent
    active = np.ones(30, dtype=bool)
    active[removed] = False
    assert trie.num_active == 18
    check_against_brute_force(trie, codes, active)
    expected = np.where(active, np.arange(30), -1)
    np.testing.assert_array_equal(trie.lookup(codes), expected)


def test_add_items_gets_new_indices_and_masks() -> None:
    all_codes = random_catalog(40, seed=6)
    trie = CatalogTrie(codes=all_codes[:25], level_sizes=SIZES)
    trie.remove_items([0, 3])
    new = trie.add_items(all_codes[25:])
    np.testing.assert_array_equal(new, np.arange(25, 40))
    active = np.ones(40, dtype=bool)
    active[[0, 3]] = False
    check_against_brute_force(trie, all_codes, active)
    np.testing.assert_array_equal(trie.lookup(all_codes[25:]), new)
    # same result as building from scratch and removing
    fresh = CatalogTrie(codes=all_codes, level_sizes=SIZES)
    fresh.remove_items([0, 3])
    for t in range(len(SIZES)):
        paths_a = torch.from_numpy(trie.paths(all_codes)[:, t])
        paths_b = torch.from_numpy(fresh.paths(all_codes)[:, t])
        assert torch.equal(trie.counts(t, paths_a), fresh.counts(t, paths_b))


def test_readding_a_removed_code_reuses_it() -> None:
    codes = random_catalog(10, seed=7)
    trie = CatalogTrie(codes=codes, level_sizes=SIZES)
    trie.remove_items([4])
    (idx,) = trie.add_items(codes[4:5])
    assert idx == 10
    assert trie.lookup(codes[4:5]).tolist() == [10]
    assert trie.num_active == 10


def test_empty_catalog_then_add() -> None:
    trie = CatalogTrie(codes=np.zeros((0, 3), dtype=np.int64), level_sizes=SIZES)
    assert trie.num_items == 0
    assert not trie.allowed(0, torch.zeros(1, dtype=torch.long)).any()
    new = trie.add_items([[1, 2, 3]])
    assert new.tolist() == [0]
    assert trie.lookup([[1, 2, 3]]).tolist() == [0]


@pytest.mark.parametrize(
    ("codes", "match"),
    [
        (np.array([[0, 0, 0], [0, 0, 0]]), "more than once"),
        (np.array([[0, 0, 5]]), "level 2 must lie in"),
        (np.array([[0, 0]]), "shape"),
        (np.array([[0.5, 0, 0]]), "integers"),
    ],
)
def test_bad_codes_raise(codes: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CatalogTrie(codes=codes, level_sizes=SIZES)


def test_add_duplicate_of_active_item_raises_and_leaves_trie_unchanged() -> None:
    codes = random_catalog(10, seed=8)
    trie = CatalogTrie(codes=codes, level_sizes=SIZES)
    with pytest.raises(ValueError, match="active item"):
        trie.add_items(codes[2:3])
    assert trie.num_items == 10 and trie.num_active == 10


def test_remove_out_of_range_raises() -> None:
    trie = CatalogTrie(codes=random_catalog(5, seed=9), level_sizes=SIZES)
    with pytest.raises(ValueError, match="item indices"):
        trie.remove_items([5])


def test_scalar_child_and_allowed_codes_agree_with_batched_queries() -> None:
    codes = random_catalog(25, seed=10)
    trie = CatalogTrie(codes=codes, level_sizes=SIZES)
    trie.remove_items([0, 1, 2])
    paths = trie.paths(codes)
    for row, path in zip(codes, paths, strict=True):
        for t in range(len(SIZES)):
            mask = trie.allowed(t, torch.tensor([path[t]]))[0].numpy()
            np.testing.assert_array_equal(trie.allowed_codes(t, int(path[t])), np.flatnonzero(mask))
            step = trie.step(t, torch.tensor([path[t]]), torch.tensor([row[t]]))
            assert trie.child(t, int(path[t]), int(row[t])) == int(step[0])


def _snapshot(trie: CatalogTrie, codes: np.ndarray) -> list[np.ndarray]:
    """Everything the beam search and the lookups read, for every prefix of ``codes``."""
    paths = trie.paths(codes)
    out = [paths, trie.lookup(codes), trie.active.copy()]
    for t in range(trie.num_levels):
        nodes = torch.from_numpy(paths[:, t]).clamp(min=0)
        out.append(trie.counts(t, nodes).numpy())
        out.append(trie.step(t, nodes, torch.from_numpy(codes[:, t])).numpy())
    return out


@pytest.mark.parametrize("sizes", [[4, 3, 5], [16, 16, 2]])
def test_sparse_and_dense_levels_agree_through_adds_and_removes(sizes: list[int]) -> None:
    """The sparse edge storage answers every query like the dense arrays, before and after mutations."""
    codes = random_catalog(120 if sizes[0] == 16 else 50, seed=11, sizes=sizes)
    start = len(codes) * 2 // 3
    tries = {s: CatalogTrie(codes=codes[:start], level_sizes=sizes, storage=s) for s in ("dense", "sparse", "auto")}
    assert set(tries["sparse"].level_storage()[1:]) == {"sparse"}
    assert set(tries["dense"].level_storage()) == {"dense"}
    rng = np.random.default_rng(12)
    removed = rng.choice(start, size=start // 3, replace=False)
    for trie in tries.values():
        trie.remove_items(removed)
        trie.add_items(codes[start:])
        trie.add_items(codes[removed[:2]])  # re-add two removed codes: the edges point at new items
    snaps = {s: _snapshot(t, codes) for s, t in tries.items()}
    for got in (snaps["sparse"], snaps["auto"]):
        for a, b in zip(got, snaps["dense"], strict=True):
            np.testing.assert_array_equal(a, b)
    if sizes == SIZES:
        check_against_brute_force(tries["sparse"], tries["sparse"].codes, tries["sparse"].active)
    for t in range(len(sizes)):
        for node in range(tries["dense"].num_nodes(t)):
            np.testing.assert_array_equal(tries["sparse"].allowed_codes(t, node), tries["dense"].allowed_codes(t, node))


def test_auto_storage_makes_large_sparse_levels_sparse() -> None:
    """A level with many cells and few edges is stored as edges; its memory follows the edges."""
    rng = np.random.default_rng(13)
    sizes = [8192, 8192, 8]
    prefixes = np.unique(rng.integers(0, 8192, size=(5000, 2)), axis=0)
    codes = np.concatenate([prefixes, np.zeros((len(prefixes), 1), dtype=np.int64)], axis=1)
    trie = CatalogTrie(codes=codes, level_sizes=sizes)
    assert trie.level_storage() == ["dense", "sparse", "dense"]  # level 1: 5000 edges in ~4700 x 8192 cells
    assert trie.nbytes() < 8 * 4000 * 8192  # dense would need ~290 MiB for level 1 alone
    np.testing.assert_array_equal(trie.lookup(codes), np.arange(len(codes)))
