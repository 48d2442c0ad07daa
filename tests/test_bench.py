"Tests of cotdistill.bench: the record format, the side-by-side measurement, the markdown, and the CLI at smoke size."
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cotdistill.bench import (RECORD_KEYS, PeakMemory, interleaved, make_record, passes, quick_profile_records,
                              render_markdown, side_by_side, write_reports)

ROOT = Path(__file__).resolve().parent.parent


def test_record_keys_and_machine():
    r = make_record("sft_tokens_per_s_vs_trl", 1.8, 1.5, "x", {"A": "kit", "B": "trl"})
    assert tuple(r) == RECORD_KEYS
    m = r["detail"]["machine"]
    for k in ("cpu", "cores", "torch_threads", "torch"): assert k in m
    json.dumps(r)                                            # JSON-serialisable


def test_ratio_semantics():
    assert passes(make_record("a", 1.5, 1.5, "x", {})) is True          # at the target: passes
    assert passes(make_record("a", 1.49, 1.5, "x", {})) is False
    assert passes(make_record("a", 3.0, None, "x", {})) is None           # information only
    assert passes(make_record("a", None, 1.0, "x", {})) is None           # not measured
    with pytest.raises(TypeError): make_record("a", "2x", 1.5, "x", {})
    with pytest.raises(TypeError): make_record("a", True, 1.5, "x", {})
    with pytest.raises(ValueError): make_record("", 1.0, 1.0, "x", {})


def test_interleaved_order_medians_and_ratio():
    calls = []
    slow_t = iter([0.04, 9.0, 0.04, 0.04, 0.04])
    def fast(): calls.append("A"); return 0.01
    def slow(): calls.append("B"); return next(slow_t)
    r = side_by_side(fast, slow, repeats=5)
    assert calls == ["A", "B"] * 5
    assert r["ratio"] == pytest.approx(4.0)                   # median 0.04 / 0.01; the 9 s outlier would give a mean of 1.83 s
    assert r["A"]["seconds"] == [0.01] * 5 and r["repeats"] == 5


def test_interleaved_wall_time_and_work():
    res = interleaved({"sleepy": lambda: time.sleep(0.02), "work": lambda: (0.5, 100)}, repeats=3, warmup=1)
    assert 0.015 < res["sleepy"]["median_s"] < 0.5            # wall time when fn returns nothing
    assert res["work"]["median_rate"] == pytest.approx(200.0) # (seconds, work): work per second
    with pytest.raises(ValueError): interleaved({"x": lambda: 1.0}, repeats=0)


def test_real_speedup_is_measured():
    r = side_by_side(lambda: time.sleep(0.01), lambda: time.sleep(0.05), repeats=3)
    assert r["ratio"] > 2


def test_peak_memory():
    import torch
    with PeakMemory() as pm:
        x = torch.ones(32 * 2**20 // 4); x += 1; time.sleep(0.03)
    del x
    assert pm.peak_mb >= 25


def test_markdown_table_and_notes(tmp_path):
    recs = [make_record("sft_fast", 2.0, 1.5, "x", {"A": "kit", "B": "trl"}),
            make_record("flops_share", 0.2, 0.4, "share", {"why": "small matmuls"}),
            make_record("generate_latency", 3.0, None, "x", {}),
            *quick_profile_records(tmp_path / "missing.json")]
    md = render_markdown(recs)
    assert "| benchmark | ratio | target | pass | unit | A vs B |" in md
    assert "| sft_fast | 2 | 1.5 | pass | x | A: kit; B: trl |" in md
    assert "| flops_share | 0.2 | 0.4 | FAIL |" in md and "small matmuls" in md
    assert "| generate_latency | 3 | — | — |" in md
    assert "not measured" in md and "does not exist" in md
    j, m = write_reports(recs, tmp_path / "out")
    assert json.loads(j.read_text())[0]["name"] == "sft_fast" and m.read_text() == md


def test_quick_profile_from_run_json(tmp_path):
    p = tmp_path / "run.json"
    p.write_text(json.dumps({"total_seconds": 1500, "notebooks": [{"notebook": "05_dataset.ipynb", "seconds": 300},
                                                                  {"notebook": "07_sft.ipynb", "failed": "boom"}]}))
    (r,) = quick_profile_records(p)
    assert r["ratio"] == pytest.approx(1200 / 1500) and passes(r) is False
    assert r["detail"]["notebook_seconds"]["05_dataset.ipynb"] == 300 and r["detail"]["failed"] == ["07_sft.ipynb"]


def test_cli_smoke(tmp_path):
    "python -m cotdistill.bench --profile smoke --out DIR: runs the notebook via papermill and writes both reports."
    env = {**os.environ, "COTDISTILL_THREADS": "1"}
    env.pop("IN_TEST", None)
    p = subprocess.run([sys.executable, "-m", "cotdistill.bench", "--profile", "smoke", "--out", str(tmp_path)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = json.loads((tmp_path / "benchmarks.json").read_text())
    names = [r["name"] for r in recs]
    for word in ("sft", "flops", "grpo", "generate"): assert any(word in n for n in names), (word, names)
    for r in recs: assert tuple(r) == RECORD_KEYS and "machine" in r["detail"]
    assert (tmp_path / "benchmarks.md").read_text().startswith("# cotdistill benchmarks")
    assert (tmp_path / "benchmarks_scaling.png").stat().st_size > 1000
    assert "benchmarks.json" in p.stdout


def test_cli_bad_profile(tmp_path):
    p = subprocess.run([sys.executable, "-m", "cotdistill.bench", "--profile", "nope", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "nope" in p.stderr
