"""constrained_beam_search against HF generate (the oracle) and against exhaustive scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_decoding_models import level_offsets, make_model, random_inputs

from sidrec.decoding import (
    BeamSearchResult,
    CatalogTrie,
    constrained_beam_search,
    hf_constrained_generate,
    topk_mismatches,
)

SIZES = [4, 3, 5]
OFFSETS = level_offsets(SIZES)


def random_catalog(n: int, seed: int, sizes: list[int] = SIZES) -> np.ndarray:
    rng = np.random.default_rng(seed)
    space = np.array(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")).reshape(len(sizes), -1).T
    return space[rng.choice(len(space), size=n, replace=False)]


def random_exclude(batch: int, num_items: int, *, seed: int, max_len: int = 12) -> list[list[int]]:
    """Random histories with repeats, as the exclude lists."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, num_items, size=rng.integers(0, max_len + 1)).tolist() for _ in range(batch)]


def assert_same_topk(ours: BeamSearchResult, ref: BeamSearchResult, tol: float = 1e-4) -> None:
    """Scores equal position by position; items equal except among scores tied within ``tol``."""
    problems = topk_mismatches(ours, ref, tol=tol)
    assert not problems, problems


def assert_valid(result: BeamSearchResult, trie: CatalogTrie, exclude: list[list[int]] | None = None) -> None:
    """Every item is an active catalog item with the returned code; no duplicates; sorted; no excluded."""
    items, codes = result.items, result.codes
    for u in range(items.shape[0]):
        row = items[u][items[u] >= 0]
        assert len(set(row.tolist())) == len(row)
        assert trie.active[row.numpy()].all()
        found = trie.lookup(codes[u][items[u] >= 0].numpy())
        np.testing.assert_array_equal(found, row.numpy())
        if exclude is not None:
            assert not set(row.tolist()) & set(exclude[u])
        scores = result.scores[u]
        assert (scores[:-1] >= scores[1:]).all()


def assert_matches_hf_oracle(model, trie: CatalogTrie, ids: torch.Tensor, mask: torch.Tensor, *, beam: int,
                             exclude: list[list[int]]) -> None:
    """Our beam search equals HF ``generate`` with the trie as ``prefix_allowed_tokens_fn`` (same top-k items
    and scores), without and with ``exclude``, and every output is a valid, non-excluded catalog item."""
    for excl in (None, exclude):
        ours = constrained_beam_search(model, trie, ids, mask, beam_size=beam, k=beam, exclude=excl)
        ref = hf_constrained_generate(model, trie, ids, mask, beam_size=beam, k=beam, exclude=excl)
        assert_same_topk(ours, ref)
        assert_valid(ours, trie, excl)


def exhaustive_scores(model, trie: CatalogTrie, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-probability of every item for every user by teacher forcing ``(B, num_items)`` (model.forward)."""
    codes = torch.from_numpy(trie.codes.copy())  # (N, L)
    tokens = codes + torch.tensor(OFFSETS)  # (N, L)
    n, b = codes.shape[0], ids.shape[0]
    decoder_ids = torch.cat([torch.zeros(n, 1, dtype=torch.long), tokens[:, :-1]], dim=1)  # (N, L)
    out = torch.empty(b, n)
    with torch.no_grad():
        for u in range(b):
            logits = model(
                input_ids=ids[u : u + 1].expand(n, -1),
                attention_mask=mask[u : u + 1].expand(n, -1),
                decoder_input_ids=decoder_ids,
            ).logits  # (N, L, V)
            logp = torch.log_softmax(logits.float(), dim=-1)
            out[u] = logp.gather(2, tokens[..., None])[..., 0].sum(1)
    return out


@pytest.mark.parametrize(
    ("beam", "batch", "variant"),
    [(1, 3, "relu"), (3, 1, "relu"), (5, 4, "gated-gelu"), (8, 3, "untied"), (12, 2, "relu")],
)
def test_matches_hf_generate(beam: int, batch: int, variant: str) -> None:
    ff = "gated-gelu" if variant == "gated-gelu" else "relu"
    model = make_model(SIZES, seed=beam + batch, ff=ff, tied=variant != "untied")
    trie = CatalogTrie(codes=random_catalog(40, seed=beam), level_sizes=SIZES)
    ids, mask = random_inputs(batch, model.config.vocab_size, seed=beam * 7 + batch)
    k = max(1, beam - 1)
    ours = constrained_beam_search(model, trie, ids, mask, beam_size=beam, k=k, level_offsets=OFFSETS)
    ref = hf_constrained_generate(model, trie, ids, mask, beam_size=beam, k=k, level_offsets=OFFSETS)
    assert_same_topk(ours, ref)
    assert_valid(ours, trie)
    assert ours.items.dtype == torch.int64 and ours.items.shape == (batch, k)


@pytest.mark.parametrize(("beam", "batch"), [(4, 3), (10, 2)])
def test_exclude_matches_hf_generate(beam: int, batch: int) -> None:
    model = make_model(SIZES, seed=11 + beam)
    trie = CatalogTrie(codes=random_catalog(45, seed=beam + 1), level_sizes=SIZES)
    ids, mask = random_inputs(batch, model.config.vocab_size, seed=beam)
    exclude = random_exclude(batch, 45, seed=beam, max_len=25)
    kw = {"beam_size": beam, "k": beam, "exclude": exclude, "level_offsets": OFFSETS}
    ours = constrained_beam_search(model, trie, ids, mask, **kw)
    ref = hf_constrained_generate(model, trie, ids, mask, **kw)
    assert_same_topk(ours, ref)
    assert_valid(ours, trie, exclude)


def test_removed_and_added_items_match_hf_generate() -> None:
    all_codes = random_catalog(50, seed=21)
    trie = CatalogTrie(codes=all_codes[:35], level_sizes=SIZES)
    removed = [0, 5, 9, 17, 30]
    trie.remove_items(removed)
    trie.add_items(all_codes[35:])
    model = make_model(SIZES, seed=3)
    ids, mask = random_inputs(4, model.config.vocab_size, seed=5)
    kw = {"beam_size": 6, "k": 6, "level_offsets": OFFSETS}
    ours = constrained_beam_search(model, trie, ids, mask, **kw)
    ref = hf_constrained_generate(model, trie, ids, mask, **kw)
    assert_same_topk(ours, ref)
    assert_valid(ours, trie)
    assert not set(ours.items.view(-1).tolist()) & set(removed)


def test_full_beam_equals_exhaustive_ranking_with_removals_additions_and_exclude() -> None:
    """With beam >= catalog size the search is exhaustive: compare with teacher-forced scoring."""
    all_codes = random_catalog(30, seed=31)
    trie = CatalogTrie(codes=all_codes[:24], level_sizes=SIZES)
    trie.remove_items([1, 2, 3, 20])
    added = trie.add_items(all_codes[24:])
    model = make_model(SIZES, seed=7, ff="gated-gelu")
    batch = 5
    ids, mask = random_inputs(batch, model.config.vocab_size, seed=9)
    exclude = random_exclude(batch, trie.num_items, seed=4, max_len=15)
    exclude[0] = list(range(trie.num_items))  # everything excluded: nothing to return
    exclude[1] = [i for i in range(trie.num_items) if i not in (5, 26)]  # exactly two valid items
    k = 8
    result = constrained_beam_search(
        model, trie, ids, mask, beam_size=trie.num_items, k=k, exclude=exclude, level_offsets=OFFSETS
    )
    full = exhaustive_scores(model, trie, ids, mask)  # (B, N)
    for u in range(batch):
        valid = trie.active.copy()
        valid[exclude[u]] = False
        scores = full[u].masked_fill(~torch.from_numpy(valid), float("-inf"))
        top, idx = scores.topk(k)
        top_idx = idx.masked_fill(torch.isneginf(top), -1)
        torch.testing.assert_close(result.scores[u], top, atol=1e-4, rtol=0)
        finite = torch.isfinite(top)
        assert set(result.items[u][finite].tolist()) == set(top_idx[finite].tolist())
        assert (result.items[u][~finite] == -1).all()
    assert (result.items[0] == -1).all()
    assert sorted(result.items[1][:2].tolist()) == [5, 26] and (result.items[1][2:] == -1).all()
    assert set(result.items.view(-1).tolist()) & set(added.tolist())  # new items can be recommended
    assert_valid(result, trie, exclude)


def test_exclude_keeps_k_items_when_beam_is_small() -> None:
    """Pruning exhausted prefixes: excluding the top items still yields k valid items at beam == k."""
    model = make_model(SIZES, seed=13)
    trie = CatalogTrie(codes=random_catalog(40, seed=13), level_sizes=SIZES)
    ids, mask = random_inputs(2, model.config.vocab_size, seed=13)
    plain = constrained_beam_search(model, trie, ids, mask, beam_size=4, k=4, level_offsets=OFFSETS)
    # exclude each user's whole top-4 and every sibling sharing their first two codes
    exclude = []
    for u in range(2):
        prefixes = {tuple(c[:2]) for c in plain.codes[u].tolist()}
        exclude.append([i for i, c in enumerate(trie.codes.tolist()) if tuple(c[:2]) in prefixes])
    result = constrained_beam_search(
        model, trie, ids, mask, beam_size=4, k=4, exclude=exclude, level_offsets=OFFSETS
    )
    assert (result.items >= 0).all()
    assert_valid(result, trie, exclude)


def test_exclude_accepts_padded_tensor() -> None:
    model = make_model(SIZES, seed=17)
    trie = CatalogTrie(codes=random_catalog(30, seed=17), level_sizes=SIZES)
    ids, mask = random_inputs(2, model.config.vocab_size, seed=17)
    lists = [[3, 4, 4], [7]]
    padded = torch.tensor([[3, 4, 4], [7, -1, -1]])
    kw = {"beam_size": 5, "k": 5, "level_offsets": OFFSETS}
    a = constrained_beam_search(model, trie, ids, mask, exclude=lists, **kw)
    b = constrained_beam_search(model, trie, ids, mask, exclude=padded, **kw)
    assert torch.equal(a.items, b.items) and torch.equal(a.scores, b.scores)


def test_results_do_not_depend_on_batch_composition() -> None:
    """Batched users do not interact: each row equals the user decoded alone (padding included)."""
    model = make_model(SIZES, seed=19)
    trie = CatalogTrie(codes=random_catalog(40, seed=19), level_sizes=SIZES)
    ids, mask = random_inputs(4, model.config.vocab_size, seed=19)
    kw = {"beam_size": 6, "k": 3, "level_offsets": OFFSETS}
    batched = constrained_beam_search(model, trie, ids, mask, **kw)
    for u in range(4):
        length = int(mask[u].sum())
        alone = constrained_beam_search(model, trie, ids[u : u + 1, :length], mask[u : u + 1, :length], **kw)
        assert torch.equal(alone.items[0], batched.items[u])
        torch.testing.assert_close(alone.scores[0], batched.scores[u], atol=1e-5, rtol=0)


def test_chunking_by_length_does_not_change_results() -> None:
    """Length-sorted chunks (any size, right or left padding) give the one-chunk result."""
    model = make_model(SIZES, seed=37)
    trie = CatalogTrie(codes=random_catalog(40, seed=37), level_sizes=SIZES)
    ids, mask = random_inputs(7, model.config.vocab_size, seed=37, max_len=12)
    # make user 2 left-padded: its tokens shifted to the end of the row
    length = int(mask[2].sum())
    ids[2] = torch.cat([torch.zeros(12 - length, dtype=torch.long), ids[2, :length]])
    mask[2] = torch.cat([torch.zeros(12 - length, dtype=torch.long), torch.ones(length, dtype=torch.long)])
    exclude = random_exclude(7, 40, seed=37, max_len=10)
    kw = {"beam_size": 5, "k": 4, "exclude": exclude, "level_offsets": OFFSETS}
    whole = constrained_beam_search(model, trie, ids, mask, chunk_users=None, **kw)
    for chunk in (1, 3, 7):
        part = constrained_beam_search(model, trie, ids, mask, chunk_users=chunk, **kw)
        assert torch.equal(part.items, whole.items)
        assert torch.equal(part.codes, whole.codes)
        torch.testing.assert_close(part.scores, whole.scores, atol=1e-5, rtol=0)
    assert_valid(whole, trie, exclude)


def test_model_training_mode_and_threads_are_restored() -> None:
    model = make_model(SIZES, seed=23).train()
    trie = CatalogTrie(codes=random_catalog(10, seed=23), level_sizes=SIZES)
    ids, mask = random_inputs(1, model.config.vocab_size, seed=23)
    threads = torch.get_num_threads()
    kw = {"beam_size": 2, "k": 1, "level_offsets": OFFSETS}
    one = constrained_beam_search(model, trie, ids, mask, num_threads=1, **kw)
    assert model.training and torch.get_num_threads() == threads
    default = constrained_beam_search(model, trie, ids, mask, **kw)
    assert torch.equal(one.items, default.items)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beam_size": 2, "k": 3}, "k <= beam_size"),
        ({"beam_size": 2, "k": 0}, "k <= beam_size"),
        ({"beam_size": 2, "k": 1, "exclude": [[0]]}, "one list per user"),
        ({"beam_size": 2, "k": 1, "exclude": [[0], [99]]}, "outside"),
        ({"beam_size": 2, "k": 1, "level_offsets": [2, 6]}, "levels"),
        ({"beam_size": 2, "k": 1, "level_offsets": [2, 6, 100]}, "outside the model's vocabulary"),
        ({"beam_size": 2, "k": 1, "level_offsets": None}, "level_offsets"),
        ({"beam_size": 2, "k": 1, "chunk_users": 0}, "chunk_users"),
        ({"beam_size": 2, "k": 1, "num_threads": 0}, "num_threads"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    model = make_model(SIZES, seed=29)
    trie = CatalogTrie(codes=random_catalog(10, seed=29), level_sizes=SIZES)
    ids, mask = random_inputs(2, model.config.vocab_size, seed=29)
    kwargs = {"level_offsets": OFFSETS, **kwargs}
    with pytest.raises(ValueError, match=match):
        constrained_beam_search(model, trie, ids, mask, **kwargs)


def test_topk_mismatches_detects_differences() -> None:
    """The comparison used against HF must flag wrong items/scores and accept tied swaps."""
    items = torch.tensor([[5, 6, 7]])
    scores = torch.tensor([[-1.0, -2.0, -2.0]])
    codes = torch.zeros(1, 3, 3, dtype=torch.long)
    ref = BeamSearchResult(items=items, scores=scores, codes=codes)
    swapped = BeamSearchResult(items=torch.tensor([[5, 7, 6]]), scores=scores, codes=codes)
    assert topk_mismatches(swapped, ref) == []
    wrong_item = BeamSearchResult(items=torch.tensor([[6, 5, 7]]), scores=scores, codes=codes)
    assert topk_mismatches(wrong_item, ref)
    wrong_score = BeamSearchResult(items=items, scores=torch.tensor([[-1.0, -2.0, -2.1]]), codes=codes)
    assert topk_mismatches(wrong_score, ref)
    missing = BeamSearchResult(
        items=torch.tensor([[5, 6, -1]]), scores=torch.tensor([[-1.0, -2.0, float("-inf")]]), codes=codes
    )
    assert topk_mismatches(missing, ref)


def test_sparse_trie_gives_the_same_search_as_dense() -> None:
    """Large catalogs store deep trie levels as sorted edges; beam search must not see the difference."""
    all_codes = random_catalog(50, seed=41)
    model = make_model(SIZES, seed=13)
    ids, mask = random_inputs(4, model.config.vocab_size, seed=6)
    exclude = random_exclude(4, 50, seed=2, max_len=10)
    results = []
    for storage in ("dense", "sparse"):
        trie = CatalogTrie(codes=all_codes[:40], level_sizes=SIZES, storage=storage)
        trie.remove_items([1, 7, 22])
        trie.add_items(all_codes[40:])
        results.append(constrained_beam_search(model, trie, ids, mask, beam_size=6, k=6, exclude=exclude,
                                               level_offsets=OFFSETS))
    dense, sparse = results
    assert torch.equal(dense.items, sparse.items) and torch.equal(dense.codes, sparse.codes)
    assert torch.equal(dense.scores, sparse.scores)
