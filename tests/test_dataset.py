"Tests of cotdistill.dataset: selections on a controlled teacher, independent recounts, bad input, SIGKILL resume."
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import pandas as pd
import pytest

from cotdistill.dataset import (DATASET_JSON_KEYS, ROW_FIELDS, SELECTIONS, StandInTeacher, construct_cot_dataset,
                                dataset_stats, export_dataset, filter_counts, normalize_rationale, write_dataset_report)
from cotdistill.tasks import answers_match, get_task
from cotdistill.teachers import Teacher

ROOT = Path(__file__).resolve().parents[1]
TASK = get_task("arith", digit_order="lsd")
SIZES = dict(n_validation=10, n_test=10)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COTDISTILL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


class Script(Teacher):
    "Known outputs: script[question][j] is draw j at every temperature; counts backend calls."
    backend = "script"
    def __init__(self, script, name="s", **kw):
        super().__init__(name, progress=False, **kw); self.script, self.calls = script, 0
    def _config(self): return {"script": json.dumps(self.script, sort_keys=True)}
    def _generate(self, jobs, temperature, seed, max_new_tokens):
        for jb in jobs:
            self.calls += 1
            outs = self.script[jb.prompt]
            yield jb, {"text": outs[jb.sample_index % len(outs)], "finish_reason": "stop"}


# two questions (numbers written least-significant digit first: '41' is 14)
QA = "Ann has 4 apples. She buys 3 more. Then her apples are multiplied by 2."   # 4+3=7, 7*2=14
QB = "Bob has 9 pens. He gives away 5."                                              # 9-5=4
SCRIPT = {
    QA: [" 4 + 3 = 7 ; 7 * 2 = 41 #### 41",                                           # 0 concise correct (len 12)
         " Step 1: she has 4 apples. Step 2: she buys 3, so 4 + 3 = 7. Step 3: 7 * 2 = 41. #### 41",  # 1 verbose correct
         "  4 + 3 = 7 ;   7 * 2 = 41   #### 41",                                          # 2 duplicate of 0
         " 4 + 3 = 7 ; 7 * 2 = 51 #### 51",                                               # 3 wrong answer
         " 4 + 3 = 8 ; 7 * 2 = 41 #### 41",                                               # 4 right answer, wrong step
         " 4 + 3 = 7 ; 7 * 2 =",                                                          # 5 no answer
         " 4 + 3 = 7 , then 7 * 2 = 41 #### 41"],                                         # 6 correct, 1 token longer
    QB: [" 9 - 5 = 4 #### 4", " 9 - 5 = 3 #### 3", " 9 - 5 = 4 #### 4", " so 9 - 5 = 4 #### 4",
         " 9 - 5 = 4 #### 4", " 9 - 5 = 4 #### 4", " 9 - 5 = 4 #### 4"],
}
ROWS = [{"question": QA, "answer": "14"}, {"question": QB, "answer": "4"}]


def kept(ds, q):
    return sorted(r["sample_index"] for r in ds if r["question"] == q)


def build(sel, teacher=None, **kw):
    t = teacher or Script(SCRIPT)
    return construct_cot_dataset(t, ROWS, task=TASK, temperatures=(0.5,), samples_per_temperature=7, selection=sel, **kw)


def test_selections_on_known_outputs(cache):
    got = {sel: (kept(ds, QA), kept(ds, QB)) for sel in SELECTIONS for ds in [build(sel)]}
    assert got["all"] == ([0, 1, 3, 4, 6], [0, 1, 3])          # duplicates and the no-answer draw removed
    assert got["correct"] == ([0, 1, 4, 6], [0, 3])
    assert got["shortest_correct"] == ([0], [0])
    assert got["concise"] == ([0, 6], [0, 3])                   # 6 is within 1.2x of 0; 1 is not; 4 has a wrong step
    assert got["diverse"] == ([0, 1, 6], [0, 3])
    assert (kept(build("concise", length_limit=1.0), QA), kept(build("concise", length_limit=None), QA)) == ([0], [0, 1, 6])
    assert kept(build("concise", length_limit=None, token_budget=13), QA) == [0, 6]
    assert kept(build("correct", max_per_question=2), QA) == [0, 6]                      # shortest first
    assert kept(build("diverse", max_per_question=2), QA) == [0, 1]                      # the most different pair
    ds = build("all")
    assert ds.column_names == list(ROW_FIELDS)
    assert len({(r["question"], normalize_rationale(r["rationale"])) for r in ds}) == len(ds)
    row = next(r for r in ds if r["question"] == QA and r["sample_index"] == 3)
    assert (row["answer"], row["label"], row["correct"], row["completion"]) == ("15", "14", False, " 4 + 3 = 7 ; 7 * 2 = 51 #### 51")
    assert row["prompt"] == TASK.format_prompt(QA)


def test_pooled_teachers_and_self_consistency(cache):
    other = {QA: [" 4 + 3 = 7 ; 7 * 2 = 41 #### 41", " 4 * 3 = 21 ; 21 + 2 = 41 #### 41"], QB: [" 9 - 5 = 4 #### 4", " 9 + 5 = 41 #### 41"]}
    t1, t2 = Script(SCRIPT, name="one"), Script(other, name="two")
    ds, pool = construct_cot_dataset([t1, t2], [QA, QB], task=TASK, temperatures=(0.5,), samples_per_temperature=7,
                                     selection="correct", min_confidence=0.0, return_pool=True)
    assert set(pool["label_source"]) == {"self_consistency"}
    labels = pool.groupby("question")["label"].first()
    assert (labels[QA], labels[QB]) == ("14", "4")
    assert set(ds["teacher"]) == {"script:one", "script:two"}
    # the rationale both teachers wrote is kept once, under the first teacher
    assert sum(normalize_rationale(r["rationale"]) == "4 + 3 = 7 ; 7 * 2 = 41" for r in ds) == 1
    assert any(r["teacher"] == "script:two" and r["rationale"].startswith("4 * 3") for r in ds)   # not grounded, but correct
    conf_b = pool[pool["question"] == QB]["confidence"].iloc[0]
    assert abs(conf_b - 10 / 14) < 1e-6                         # 6 of 7 from one, 4 of 7 from two say 4
    unsure = construct_cot_dataset([t1, t2], [QA, QB], task=TASK, temperatures=(0.5,), samples_per_temperature=7,
                                   selection="correct", min_confidence=0.75)
    assert set(unsure["question"]) == {QA}                      # QB's vote share 0.71 < 0.75: dropped


def _gold():
    dd = TASK.splits(seed=0, n_train=40, **SIZES)
    return {r["question"]: r["answer"] for r in dd["train"]}, dd["train"].to_list()


def test_independent_recount(cache):
    gold, rows = _gold()
    teacher = StandInTeacher(rows, TASK, progress=False)
    common = dict(samples_per_temperature=3, n=40, split_sizes=SIZES, max_new_tokens=96, return_pool=True)
    for sel in ("concise", "correct", "diverse", "all"):
        ds, pool = construct_cot_dataset(teacher, TASK, selection=sel, max_per_question=3 if sel == "diverse" else None, **common)
        wrong = invalid = 0
        for r in ds:
            rationale, answer = TASK.parse_completion(r["completion"])       # re-parse what a trainer will see
            assert r["prompt"] == TASK.format_prompt(r["question"])
            wrong += not answers_match(answer, gold[r["question"]])
            invalid += not TASK.check_rationale(rationale, r["question"])["valid"]
        stats = dataset_stats(pool, ds, sel)
        assert stats["wrong_answers"] == wrong
        if sel in ("concise", "diverse"): assert (wrong, invalid, stats["valid_share"]) == (0, 0, 1.0)
        if sel == "correct": assert wrong == 0
        if sel == "all": assert wrong > 0 and invalid > 0     # the stand-in does make errors: the filters have work to do
        if sel == "concise":
            assert stats["length_ratio_to_unfiltered"] < 1
            lmin = {}
            for r in pool.to_dict("records"):
                if r["correct"] and r["valid"]: lmin[r["question"]] = min(lmin.get(r["question"], 10**9), r["length"])
            assert all(r["length"] <= 1.2 * lmin[r["question"]] for r in ds)
        if sel == "diverse": assert max(pd.Series(ds["question"]).value_counts()) <= 3
    fc = filter_counts(pool)
    assert fc["wrong_answers"] > 0 and fc["invalid_steps"] > 0 and fc["verbose"] > 0 and fc["duplicates"] > 0


def test_bad_input_fails_before_sampling(cache):
    t = Script(SCRIPT)
    cases = [(dict(questions_or_task=[]), "empty"), (dict(selection="best"), "allowed: ['all'"),
             (dict(temperatures=(0.3, -0.1)), "temperature -0.1"), (dict(samples_per_temperature=0), "samples_per_temperature"),
             (dict(temperatures=()), "non-empty"), (dict(temperatures=(0.0, 0.5)), "greedy"),
             (dict(length_limit=0.5), "length_limit"), (dict(questions_or_task="one question"), "single string"),
             (dict(questions_or_task=[QA, ""]), "question 1 is empty"), (dict(min_confidence=2), "min_confidence")]
    for kw, msg in cases:
        args = dict(teacher=t, questions_or_task=[QA, QB], task=TASK, samples_per_temperature=2) | kw
        with pytest.raises((ValueError, TypeError), match=msg.replace("[", r"\[").replace("(", r"\(")):
            construct_cot_dataset(**args)
    assert t.calls == 0
    with pytest.raises(ValueError, match="share a name"):
        construct_cot_dataset([t, Script(SCRIPT)], [QA], task=TASK)


class Silent(Teacher):
    backend = "silent"
    def __init__(self, text=None): super().__init__("mute", progress=False, use_cache=False); self.text = text
    def _generate(self, jobs, temperature, seed, max_new_tokens):
        if self.text is None: return iter(())
        return ((jb, {"text": self.text}) for jb in jobs)


def test_teacher_that_returns_nothing(cache):
    with pytest.raises(RuntimeError, match="teacher silent:mute returned fewer completions"):
        construct_cot_dataset(Silent(), [QA, QB], task=TASK)
    with pytest.raises(RuntimeError, match="teacher silent:mute returned only empty completions"):
        construct_cot_dataset(Silent(text="  "), [QA, QB], task=TASK)


def test_stats_report_and_export(cache, tmp_path):
    ds, pool = build("concise", return_pool=True)
    stats = dataset_stats(pool, ds, "concise")
    assert set(DATASET_JSON_KEYS) <= set(stats)
    assert stats["per_temperature"]["0.5"] == {**stats["per_temperature"]["0.5"], "samples": 14, "accepted": len(ds)}
    assert set(stats["per_temperature"]["0.5"]) >= {"samples", "accepted", "mean_length"}
    assert (stats["rows"], stats["wrong_answers"], stats["valid_share"]) == (len(ds), 0, 1.0)
    assert stats["distinct_rationales_per_question"] == 2.0
    p = write_dataset_report(stats, tmp_path / "reports" / "quick")
    assert json.loads(p.read_text()) == json.loads(json.dumps(stats))
    assert [f.name for f in p.parent.iterdir()] == ["dataset.json"]          # nothing temporary left behind
    with pytest.raises(KeyError, match="lack"): write_dataset_report({"rows": 1}, tmp_path)
    paths = export_dataset(ds, tmp_path / "out")
    import datasets
    assert datasets.load_from_disk(str(paths["disk"])).to_list() == ds.to_list()
    assert pd.read_json(paths["jsonl"], lines=True)["completion"].tolist() == ds["completion"]
    assert pd.read_parquet(paths["parquet"])["prompt"].tolist() == ds["prompt"]
    with pytest.raises(ValueError, match="allowed"): export_dataset(ds, tmp_path, formats=["csv"])


SCRIPT_RUN = textwrap.dedent("""
    import os, sys
    os.environ["COTDISTILL_CACHE"] = sys.argv[1]; os.environ["HF_HUB_OFFLINE"] = "1"
    from cotdistill.dataset import StandInTeacher, construct_cot_dataset
    from cotdistill.tasks import get_task
    task = get_task("arith", digit_order="lsd")
    sizes = dict(n_validation=10, n_test=10)
    rows = task.splits(seed=0, n_train=60, **sizes)["train"].to_list()
    t = StandInTeacher(rows, task, delay=float(sys.argv[2]), progress=False, chunk_size=6)
    ds = construct_cot_dataset(t, task, n=60, samples_per_temperature=3, split_sizes=sizes, selection="diverse",
                               max_per_question=3, max_new_tokens=96)
    ds.to_json(sys.argv[3], lines=True)
""")


def _lines(cache_dir):
    n = 0
    for f in Path(cache_dir).glob("teacher_samples-*/samples.jsonl"):
        for line in f.read_text().splitlines():
            try: json.loads(line); n += 1
            except json.JSONDecodeError: pass
    return n


def test_sigkill_resume_gives_identical_dataset(tmp_path):
    script = tmp_path / "run.py"; script.write_text(SCRIPT_RUN)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    a, b = tmp_path / "a", tmp_path / "b"
    run = lambda c, delay, out, **kw: subprocess.Popen([sys.executable, str(script), str(c), str(delay), str(out)], env=env, cwd=ROOT, **kw)
    p = run(a, 0.02, tmp_path / "killed.jsonl", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while _lines(a) < 150 and p.poll() is None and time.time() - t0 < 120: time.sleep(0.05)
    assert p.poll() is None, "the construction finished before it could be killed"
    os.kill(p.pid, signal.SIGKILL); p.wait()
    done_before = _lines(a)
    assert 150 <= done_before < 540 and not (tmp_path / "killed.jsonl").exists()
    assert not [d for d in a.glob("cot_dataset-*") if d.suffix not in (".partial", ".lock")]   # no finished set yet
    r = subprocess.run([sys.executable, str(script), str(a), "0", str(tmp_path / "resumed.jsonl")], env=env, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _lines(a) == 540                                   # resumed: the cached samples were not generated again
    r = subprocess.run([sys.executable, str(script), str(b), "0", str(tmp_path / "clean.jsonl")], env=env, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    resumed, clean = (tmp_path / "resumed.jsonl").read_text(), (tmp_path / "clean.jsonl").read_text()
    assert len(resumed.splitlines()) > 60 and resumed == clean
