"""benchmarks/scale.py end to end at its smoke size: every task runs and the key=value line is complete."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"


@pytest.mark.slow
def test_scale_benchmark_smoke_run_reports_every_figure(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path / "data"), "--small"],
                         capture_output=True, text=True, env=env, timeout=1800)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    figures = dict(pair.split("=", 1) for pair in last.split())
    for key in ("prepare_300k_s", "prepare_300k_gb", "tok_50k_s", "tok_50k_gb", "tok_50k_max_group",
                "trie_300k_s", "trie_300k_gb", "beam_12k_users_s", "beam_50k_vs_12k"):
        assert key in figures, f"{key} missing from {last!r}"
        assert float(figures[key]) > 0
    assert int(figures["tok_50k_max_group"]) <= 16  # the collision cap holds at this size too
    # the synthetic files are in the Amazon-2023 layout the readers auto-detect
    assert list((tmp_path / "data").rglob("meta_*.jsonl*"))
