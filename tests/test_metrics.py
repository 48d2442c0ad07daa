"Tests of cotdistill.metrics: aggregates recounted from records, the GSM8K checker, paired tests, the lexical label."
import os
os.environ["HF_HUB_OFFLINE"] = "1"

import importlib.util
import random
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from cotdistill import metrics as M
from cotdistill.core import profile_section, PROFILE_NAMES

torch.set_num_threads(1)
GSM8K_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
needs_gsm8k = pytest.mark.skipif(not (GSM8K_DIR / "test.jsonl").exists(), reason=f"no GSM8K copy at {GSM8K_DIR}")


class ReplayTeacher:
    "Replays fixed completions through the Teacher.sample interface (question -> completion text)."
    prompt_fn = None
    def __init__(self, task, completions: dict): self.task, self.text = task, completions
    def sample(self, items, temperature=0.0, n=1, seed=0, max_new_tokens=256):
        out = []
        for p in items:
            rat, ans = self.task.parse_completion(self.text[p])
            out.append(SimpleNamespace(text=self.text[p], rationale=rat, answer=ans, completion_tokens=None, finish_reason="recorded"))
        return out


@pytest.fixture(scope="module")
def arith():
    from cotdistill.tasks import get_task
    task = get_task("arith")
    return task, task.splits(seed=0, n_train=70, n_validation=10, n_test=60)


def _noisy_student(task, rows, seed=0):
    "Concise gold rationales, with ~30% wrong answers and ~20% wrong result digits (a fake student with known faults)."
    rng, out = random.Random(seed), {}
    for r in rows:
        rat, ans = r["rationale"], r["answer"]
        if rng.random() < 0.3: ans = str(int(ans) + 1)
        if rng.random() < 0.2: rat = re.sub(r"= (\d)", lambda m: "= " + str((int(m.group(1)) + 1) % 10), rat, count=1)
        out[task.format_prompt(r["question"])] = task.format_completion(rat, ans)
    return out


def _recount(res) -> dict:
    "A second code path: the aggregates recomputed with pandas from the per-example records."
    d = pd.DataFrame(res.records)
    checked = d[d.steps_checked.notna()]
    lt = d[d.teacher_rationale_tokens.fillna(0) > 0]
    sims = d[d.similarity.notna()] if "similarity" in d else d.iloc[:0]
    return dict(accuracy=d.correct.astype(float).mean(),
                teacher_accuracy=d.teacher_correct.dropna().astype(float).mean(),
                rationale_tokens=d.rationale_tokens.mean(),
                validity=checked.rationale_valid.astype(float).mean(),
                step_validity=checked.steps_valid.sum() / checked.steps_checked.sum() if checked.steps_checked.sum() else None,
                length_ratio=lt.rationale_tokens.sum() / lt.teacher_rationale_tokens.sum(),
                length_ratio_chars=lt.rationale_chars.sum() / lt.teacher_rationale_chars.sum(),
                similarity=sims.similarity.mean() if len(sims) else None)


def test_profile_section():
    for p in PROFILE_NAMES:
        s = profile_section(p, "metrics")
        assert s["n_boot"] > 0 and s["similarity"] in M.SIMILARITY_KINDS


def test_evaluate_aggregates_equal_a_recount(arith):
    task, ds = arith
    rows = list(ds["test"])
    teacher = ReplayTeacher(task, {task.format_prompt(r["question"]): task.format_completion(r["rationale_verbose"], r["answer"]) for r in rows})
    student = ReplayTeacher(task, _noisy_student(task, rows))  # any object with Teacher.sample works
    res_t = M.evaluate(teacher, task, ds, method="teacher", similarity=None, n_boot=200)
    res = M.evaluate(student, task, ds, method="noisy", teacher_records=res_t, similarity="lexical", n_boot=200)
    s, rc = res.summary, _recount(res)
    assert 0.4 < s["accuracy"] < 0.95 and 0.5 < s["validity"] < 1.0  # the faults show
    for k, v in rc.items(): assert s[k] == pytest.approx(v), k
    assert s["step_validity"] is not None and s["step_validity"] > s["validity"]  # one wrong digit spoils a rationale, not all its steps
    assert s["accuracy_vs_teacher"] == pytest.approx(rc["accuracy"] / rc["teacher_accuracy"])
    assert s["accuracy_ci"][0] <= s["accuracy"] <= s["accuracy_ci"][1]
    assert s["similarity_kind"] == "lexical" and s["n_seeds"] == 1 and s["n"] == len(rows)
    assert set(M.METRIC_FIELDS) <= set(s)


def test_recorded_teacher_backend(arith, tmp_path):
    from cotdistill.core import JsonlWriter
    from cotdistill.teachers import RecordedTeacher
    task, ds = arith
    rows = list(ds["test"])
    noisy = _noisy_student(task, rows, seed=1)
    with JsonlWriter(tmp_path / "rec.jsonl", fsync=False) as w:
        w.write_many({"question": r["question"], "completion": noisy[task.format_prompt(r["question"])]} for r in rows)
    res = M.evaluate(RecordedTeacher(tmp_path / "rec.jsonl", task=task, progress=False), task, ds, similarity=None, n_boot=100)
    expect = [task.parse_completion(noisy[task.format_prompt(r["question"])])[1] == r["answer"] for r in rows]
    assert [r["correct"] for r in res.records] == expect and res["accuracy"] == pytest.approx(np.mean(expect))


def test_engine_path_recount(arith):
    from cotdistill.models import build_tokenizer, make_model
    task, ds = arith
    tok = build_tokenizer(task.vocabulary_texts())
    model = make_model("tiny", tok, seed=0)
    res = M.evaluate(model, task, ds, n=24, tokenizer=tok, similarity="lexical", method="tiny", n_boot=100, max_new_tokens=8,
                     teacher_records=[dict(id=r["id"], correct=True, rationale=r["rationale"]) for r in ds["test"]])
    rc = _recount(res)
    for k in ("accuracy", "rationale_tokens", "length_ratio", "length_ratio_chars", "teacher_accuracy"):
        assert res[k] == pytest.approx(rc[k]), k
    assert res["n_params"] > 0 and res["problems_per_s"] > 0 and len(res.records) == 24
    assert res.metrics_record().keys() == set(M.METRIC_FIELDS)


def test_multi_seed_summary_states_seeds():
    rng = np.random.default_rng(0)
    recs = [dict(id=i, seed=s, correct=bool(rng.random() < 0.8)) for s in (0, 1, 2) for i in range(100)]
    s = M.summarize(recs, method="x", n_boot=300)
    assert s["n_seeds"] == 3 and s["seed"] == [0, 1, 2] and s["n"] == 300
    assert s["accuracy"] == pytest.approx(np.mean([r["correct"] for r in recs]))
    assert set(s["accuracy_by_seed"]) == {"0", "1", "2"} and s["seed_std"] is not None
    ci = M.bootstrap_ci([r["correct"] for r in recs], strata=[r["seed"] for r in recs], n_boot=300)
    assert ci.n_seeds == 3 and "3 seeds" in str(ci)


def test_bootstrap_ci_seeded_and_errors():
    x = np.random.default_rng(1).random(200) < 0.7
    assert M.bootstrap_ci(x, n_boot=300, seed=3) == M.bootstrap_ci(x, n_boot=300, seed=3)
    ci = M.bootstrap_ci(x, n_boot=2000)
    se = np.sqrt(x.mean() * (1 - x.mean()) / len(x))
    assert ci.low < x.mean() < ci.high and ci.high - ci.low == pytest.approx(2 * 1.96 * se, rel=0.15)
    with pytest.raises(ValueError, match="non-empty"): M.bootstrap_ci([])
    with pytest.raises(ValueError, match="NaN"): M.bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="strata"): M.bootstrap_ci([1, 0], strata=[0])


def _correct_records(p, n=300, seed=0, base=None):
    "Per-problem records of a model with accuracy ~p; with `base` (uniforms) the models share problem difficulty."
    u = np.random.default_rng(seed).random(n) if base is None else base
    return [dict(id=i, correct=bool(u[i] < p)) for i in range(n)]


def test_paired_tests_better_vs_worse_and_self():
    u = np.random.default_rng(0).random(300)
    better, worse = _correct_records(0.8, base=u), _correct_records(0.65, base=u)
    c = M.compare(better, worse, n_boot=1000)
    assert c["p_mcnemar"] < 0.05 and c["p_bootstrap"] < 0.05 and c["diff_ci"][0] > 0
    same = M.compare(better, better, n_boot=1000)
    assert same["p_mcnemar"] > 0.05 and same["p_bootstrap"] > 0.05


def test_mcnemar_exact_matches_binomial():
    from math import comb
    # 15 discordant pairs, 3 one way: two-sided exact p = 2 * P(X <= 3), X ~ Bin(15, 1/2)
    p = 2 * sum(comb(15, i) for i in range(4)) / 2**15
    assert M.mcnemar_exact([1] * 12 + [0] * 3, [0] * 12 + [1] * 3)["p_value"] == pytest.approx(p)
    big = M.mcnemar_exact([1] * 3000 + [0] * 2000, [0] * 3000 + [1] * 2000)  # no overflow at large m
    assert 0 <= big["p_value"] < 1e-10
    with pytest.raises(ValueError): M.mcnemar_exact([1, 0], [1])


def test_compare_rejects_mismatched_records():
    with pytest.raises(ValueError, match="share no problem"):
        M.compare([dict(id=1, correct=True)], [dict(id=2, correct=True)])
    with pytest.raises(ValueError, match="repeat"):
        M.compare([dict(id=1, correct=True)] * 2, [dict(id=1, correct=True)])
    with pytest.raises(KeyError, match="correct"):
        M.compare([dict(id=1)], [dict(id=1, correct=True)])


def test_lcs_dp_against_brute_force():
    from functools import lru_cache
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.choice("abc") for _ in range(rng.randint(0, 9))]
        b = [rng.choice("abc") for _ in range(rng.randint(0, 9))]
        @lru_cache(None)
        def L(i, j):
            if i == len(a) or j == len(b): return 0
            return 1 + L(i + 1, j + 1) if a[i] == b[j] else max(L(i + 1, j), L(i, j + 1))
        assert M.lcs_length(a, b) == L(0, 0)


def test_lexical_fallback_is_labelled_and_never_passes(monkeypatch):
    sims, kind = M.rationale_similarity(["5 + 3 = 8"], ["5 + 3 = 8"], kind="lexical")
    assert kind == "lexical" and sims[0] == 1.0
    # "auto" without an embedding model falls back to lexical, with a warning, and says so
    monkeypatch.setattr(M, "load_embedding_model", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no model")))
    with pytest.warns(UserWarning, match="lexical"):
        _, kind = M.rationale_similarity(["a b"], ["a c"], kind="auto")
    assert kind == "lexical"
    with pytest.raises(RuntimeError): M.rationale_similarity(["a"], ["a"], kind="embedding")
    s = dict(method="m", accuracy=0.9, teacher_accuracy=0.9, validity=0.9, length_ratio=0.5, similarity=0.99, similarity_kind="lexical")
    row = {r["metric"]: r for r in M.check_targets(s)}["similarity"]
    assert row["passed"] is None and row["mark"].endswith("n/a (lexical)")
    assert M.targets_table(s).iloc[0]["similarity > 0.8"] == "0.990 n/a (lexical)"
    assert {r["metric"]: r for r in M.check_targets(dict(s, similarity_kind="embedding"))}["similarity"]["passed"] is True
    with pytest.raises(ValueError, match="allowed"): M.rationale_similarity(["a"], ["a"], kind="cosine")


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is None or M.embedding_model_path() is None,
                    reason="no offline sentence-embedding model installed")
def test_embedding_similarity_offline():
    sims, kind = M.rationale_similarity(["Alice has 5 apples and buys 3, so 5 + 3 = 8.", "The train left at noon."],
                                        ["Alice starts with 5 apples. She buys 3: 5 + 3 = 8."] * 2, kind="embedding")
    assert kind == "embedding" and sims[0] > 0.8 > sims[1]


def test_length_ratio_and_validity_rates():
    lr = M.length_ratio([10, 5, 3], [20, 10, 0])
    assert lr["ratio_of_means"] == pytest.approx(0.5) and lr["n"] == 2 and np.isnan(lr["per_question"][2])
    v = M.validity_rates([dict(n_steps=4, n_valid=4, valid=True), dict(n_steps=4, n_valid=2, valid=False), None])
    assert v["step_validity"] == 0.75 and v["rationale_validity"] == 0.5 and v["n_rationales"] == 2


def test_answer_only_method_has_null_rationale_metrics():
    recs = [dict(id=i, correct=i % 2 == 0, rationale="", teacher_correct=True, teacher_rationale_tokens=10,
                 teacher_rationale_chars=40) for i in range(10)]
    s = M.summarize(M.score_records(recs), method="answer_only", n_boot=50)
    assert s["validity"] is None and s["length_ratio"] is None and s["similarity"] is None and s["rationale_tokens"] == 0
    assert s["accuracy"] == 0.5 and s["teacher_accuracy"] == 1.0


def test_evaluate_bad_arguments(arith):
    task, ds = arith
    with pytest.raises(ValueError, match="allowed"): M.evaluate(object(), task, ds, similarity="cosine")
    with pytest.raises(ValueError, match="tokenizer"): M.evaluate(torch.nn.Linear(2, 2), task, ds, n=2)
    with pytest.raises(KeyError, match="no split"): M.evaluate(object(), task, ds, split="nope")


def test_majority_vote():
    assert M.majority_vote(["1", "2", "2", None]) == "2"
    assert M.majority_vote(["3", "4"]) == "3"
    assert M.majority_vote([None]) is None


@pytest.fixture(scope="module")
def gsm8k_gold():
    from cotdistill.tasks import get_task
    task = get_task("gsm8k", data_dir=str(GSM8K_DIR))
    gold = list(task.splits(seed=0, n_train=1, n_validation=1)["test"])
    return task, gold, [task.check_rationale(r["rationale"], r["question"]) for r in gold]


@needs_gsm8k
def test_gsm8k_gold_validity(gsm8k_gold):
    task, gold, checks = gsm8k_gold
    assert len(gold) == 1319
    annotated = [c if M._ANNOT_RE.search(r["rationale"]) else None for r, c in zip(gold, checks)]
    v = M.validity_rates(annotated)
    assert v["n_steps"] > 4000 and v["step_validity"] >= 0.98


def _mutants(task, gold, checks):
    "Every single-digit change of a passing gold step's result that moves it beyond the rounding tolerance -> flagged?"
    out = []
    for r, c in zip(gold, checks):
        anns = M._ANNOT_RE.findall(r["rationale"])
        for i, mut, old, new in M.annotation_digit_mutants(r["rationale"]):
            if M.beyond_tolerance(anns[i][0], old) is not False or not M.beyond_tolerance(anns[i][0], new): continue
            out.append((new, task.check_rationale(mut, r["question"])["n_valid"] == c["n_valid"] - 1))
    return out


@needs_gsm8k
def test_gsm8k_changed_result_digits_all_flagged(gsm8k_gold):
    "Every result digit changed beyond the rounding tolerance is flagged (decimals counted as written: '0.20' has 2)."
    muts = _mutants(*gsm8k_gold)
    assert len(muts) > 5000
    assert [new for new, flagged in muts if not flagged] == []


def test_plots_draw():
    import matplotlib
    matplotlib.use("Agg")
    recs = [dict(id=i, correct=i % 3 > 0, n_steps=2 + i % 3, seed=0) for i in range(30)]
    M.plot_accuracy_by_steps({"a": recs})
    M.plot_accuracy_vs_length([dict(method="a", accuracy=0.5, accuracy_ci=[0.4, 0.6], rationale_tokens=20)])
    M.plot_generalisation([dict(method="a", split="test", accuracy=0.9, accuracy_ci=[0.8, 1.0]),
                           dict(method="a", split="test_more_steps", accuracy=0.5, accuracy_ci=[0.4, 0.6])])
    t = M.accuracy_by(recs, "n_steps", n_boot=50)
    assert list(t.n_steps) == [2, 3, 4] and t.accuracy.tolist() == pytest.approx([0.0, 1.0, 1.0])
