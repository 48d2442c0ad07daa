"Tests of the offline teacher: its corpus (frozen shares, imperfections), training, the safetensors asset and loading."
import os
os.environ["HF_HUB_OFFLINE"] = "1"
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cotdistill.tasks import (BRIEF_SHARE, DETOUR_SHARE, TEACHER_KINDS, WRONG_STEP_SHARE, get_task, teacher_corpus,
                              teacher_rationale)

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def task():
    return get_task("arith")


@pytest.fixture(scope="module")
def corpus(task):
    rows = task.generate(2000, seed=0, stream="test-offline-teacher")
    return rows, teacher_corpus(task, rows, seed=0).to_pandas()


def _is_brief(rationale: str) -> bool:
    "An explained rationale has words before its first equation (an opener or a start sentence); a brief one has none."
    return not re.search(r"[A-Za-z]", rationale.split("=")[0])


def test_corpus_shares_match_the_frozen_values(corpus):
    _, c = corpus
    assert len(c) == 2000 and set(c["kind"]) == set(TEACHER_KINDS)
    share = c["kind"].value_counts(normalize=True)
    # 2000 Bernoulli draws: the standard error of a 10% share is 0.67 points, of a 25% share 0.97 points
    assert abs(share["wrong_step"] - WRONG_STEP_SHARE) < 0.025, share
    assert abs(share["detour"] - DETOUR_SHARE) < 0.025, share
    assert abs(c["rationale"].map(_is_brief).mean() - BRIEF_SHARE) < 0.04


def test_wrong_steps_are_rejected_and_give_wrong_answers(task, corpus):
    _, c = corpus
    for r in c.itertuples():
        res = task.check_rationale(r.rationale, r.question)
        if r.kind == "wrong_step":
            assert not res["valid"] and res["n_valid"] == res["n_steps"] - 1, (r.rationale, res)   # exactly the slipped step fails
            assert r.answer != r.gold_answer
        else:   # clean and detour rationales check and reach the gold answer
            assert res["valid"] and r.answer == r.gold_answer, (r.kind, r.rationale, res)
        assert task.parse_completion(r.completion) == (r.rationale, r.answer)


def test_detours_lengthen_without_changing_the_answer(task, corpus):
    rows, c = corpus
    import random
    row = rows[0]
    for seed in range(20):
        text, ans = teacher_rationale(task, row, random.Random(seed), "detour")
        clean, ans2 = teacher_rationale(task, row, random.Random(seed), "clean")
        assert ans == ans2 == row["answer"] and len(text) > len(clean)


def test_corpus_is_deterministic_and_row_independent(task, corpus):
    rows, c = corpus
    again = teacher_corpus(task, rows[:50], seed=0).to_pandas()
    assert list(again["rationale"]) == list(c["rationale"][:50])
    other = teacher_corpus(task, rows[:50], seed=1).to_pandas()
    assert list(other["rationale"]) != list(again["rationale"])


def test_bad_input_is_named(task):
    row = task.generate(1, seed=0)[0]
    import random
    with pytest.raises(ValueError, match="allowed"): teacher_rationale(task, row, random.Random(0), "sloppy")
    with pytest.raises(TypeError, match="'arith' task only"): teacher_corpus(get_task("mult", k=3), [row])
    with pytest.raises(ValueError, match="sum to <= 1"): teacher_corpus(task, [row], wrong_step_share=0.7, detour_share=0.5)
    with pytest.raises(ValueError, match="no problems"): teacher_corpus(task, [])


def test_tiny_teacher_trains_saves_reloads_and_samples(tmp_path, monkeypatch):
    monkeypatch.setenv("COTDISTILL_CACHE", str(tmp_path / "cache"))
    import torch
    torch.set_num_threads(1)
    from cotdistill.offline_teacher import load_offline_teacher, offline_teacher_info, train_offline_teacher
    from cotdistill.teachers import TEACHERS, make_teacher
    out = tmp_path / "asset"
    meta = train_offline_teacher({"task": "arith", "digit_order": "lsd", "n_train": 5}, preset="tiny", budget_s=60, seed=0,
                                 out_dir=out, work_dir=tmp_path / "work", progress=False, max_steps=4, n_questions=200,
                                 batch_size=16, n_eval=4, n_test=8, eval_every=2, max_new_tokens=16)
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "metrics.jsonl", "teacher.json", "README.md", "command.txt"} <= files
    assert not any(n.endswith((".bin", ".pt")) for n in files)   # weights as safetensors only, no optimizer state
    assert sum((out / n).stat().st_size for n in files) < 10 * 2**20
    assert meta["results"]["steps"] == 4 and meta["results"]["n_test"] == 8
    assert "python -m cotdistill.offline_teacher" in (out / "command.txt").read_text()
    assert offline_teacher_info(out)["config"]["preset"] == "tiny"
    from safetensors.torch import load_file
    assert any(k.endswith("embed_tokens.weight") for k in load_file(out / "model.safetensors"))

    teacher = load_offline_teacher(out, device="cpu", cache_dir=tmp_path / "samples", progress=False, batch_size=8)
    assert "offline" in TEACHERS
    qs = [r["question"] for r in teacher.task.generate(3, seed=0, stream="probe")]
    s1 = teacher.sample(qs, temperature=0.7, n=2, seed=0, max_new_tokens=12)
    assert len(s1) == 6 and teacher.last_stats["generated"] == 6
    assert all(s.backend == "hf" and s.completion_tokens <= 12 and s.finish_reason in ("stop", "length") for s in s1)
    s2 = teacher.sample(qs, temperature=0.7, n=2, seed=0, max_new_tokens=12)   # the cache answers the rerun
    assert teacher.last_stats["generated"] == 0 and all(s.cached for s in s2) and [s.text for s in s2] == [s.text for s in s1]
    t2 = make_teacher("offline", out, device="cpu", cache_dir=tmp_path / "samples", progress=False)
    assert [s.text for s in t2.sample(qs, temperature=0.7, n=2, seed=0, max_new_tokens=12)] == [s.text for s in s1]


def test_missing_asset_says_how_to_build_it(tmp_path):
    from cotdistill.offline_teacher import BUILD_COMMAND, load_offline_teacher
    with pytest.raises(FileNotFoundError) as e: load_offline_teacher(tmp_path / "nowhere")
    assert BUILD_COMMAND in str(e.value) and "04_teacher" in str(e.value)


def test_cli_help():
    r = subprocess.run([sys.executable, "-m", "cotdistill.offline_teacher", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and "--budget" in r.stdout and "--threads" in r.stdout
