"""The named experiments (14_experiments): the multiplication grid, CODI's ablation grids, and the command that runs them,
caches every seed and resumes after a kill."""
import json
import math
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cotdistill.codi import encode_codi
from cotdistill.core import ArtifactCache
from cotdistill.experiments import (ABLATIONS, CODI_ABLATIONS, EXPERIMENTS, codi_ablation_grid, codi_mult_grid, internalization_ablations,
                                    mult_data, mult_triple, run_experiment)
from cotdistill.models import build_tokenizer, make_model
from cotdistill.train import TrainConfig


def _cfg(**kw):
    return TrainConfig(**{**dict(batch_size=4, lr=1e-2, warmup_steps=1, log_every=1, ckpt_every=0, progress=False, seed=0), **kw})


# --- the command: every seed cached, a killed run resumes ------------------------------------------------------------
def _run(out: Path, cache: Path, *args) -> subprocess.Popen:
    env = {**os.environ, "COTDISTILL_CACHE": str(cache), "COTDISTILL_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "cotdistill.experiments", "run", "mult2-internalization", "--smoke", "--out", str(out), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finished(cache: Path) -> list[Path]:
    return sorted(p for p in cache.glob("experiment-*") if (p / "_meta.json").exists())


def test_experiment_killed_once_resumes_and_skips_finished_seeds(tmp_path):
    "Two seeds at toy size through the command; killed after the first seed finished; the rerun keeps it and builds only the second."
    cache, out = tmp_path / "cache", tmp_path / "reports"
    p = _run(out, cache, "--seeds", "0", "1")
    t0 = time.time()
    while not _finished(cache) and p.poll() is None and time.time() - t0 < 300: time.sleep(0.2)
    assert p.poll() is None, "the run ended before it could be killed: " + p.stdout.read()[-2000:]
    p.send_signal(signal.SIGKILL); p.wait()
    first = _finished(cache)
    assert len(first) == 1 and not (out / "smoke" / "mult2_internalization.json").exists()   # killed in the second seed: no result yet
    built = json.loads((first[0] / "_meta.json").read_text())["created"]
    q = _run(out, cache, "--seeds", "0", "1"); log = q.communicate(timeout=600)[0]
    assert q.returncode == 0, log[-3000:]
    done = _finished(cache)
    assert len(done) == 2 and json.loads((first[0] / "_meta.json").read_text())["created"] == built   # seed 0 was not rebuilt
    res = json.loads((out / "smoke" / "mult2_internalization.json").read_text())
    assert res["seeds"] == [0, 1] and [r["sizes"]["seed"] for r in res["runs"]] == [0, 1]
    assert res["command"].startswith("python -m cotdistill.experiments run mult2-internalization")
    assert (out / "smoke" / "mult2_internalization.png").exists()
    # the same spec again: nothing runs, the same result
    again = run_experiment("mult2-internalization", out, smoke=True, seeds=(0, 1), cache=ArtifactCache(cache), progress=False)
    assert again["runs"] == res["runs"] and _finished(cache) == done


def test_unknown_experiment_is_a_clear_error():
    r = subprocess.run([sys.executable, "-m", "cotdistill.experiments", "run", "mult9"], capture_output=True, text=True)
    assert r.returncode == 2 and "no experiment 'mult9'; known: [" in r.stderr


def test_every_experiment_names_a_reports_file_and_a_toy_size():
    for e in EXPERIMENTS.values():
        assert e.out.endswith(".json") and e.out.split("/")[0] in ("paper", "quick") and e.smoke and e.seeds, e.name
        json.dumps(e.kwargs)   # hashable as JSON: the cache key


# --- multiplication in the Implicit-CoT format ------------------------------------------------------------------------
from cotdistill.tasks import default_data_dir, load_icot_file, parse_mult_line

ICOT = (default_data_dir() or Path("/nonexistent")) / "icot_mult"
GRID_FIELDS = {"method", "accuracy", "accuracy_ci", "rationale_tokens", "problems_per_s", "steps", "seconds", "k", "preset", "sizes",
               "test_source", "n_params"}


def test_mult_triple_records_and_curve():
    out = mult_triple(k=2, preset="tiny", cot_steps=6, remove_per_stage=3, steps_per_stage=2, final_steps=2, n_train=200, n_validation=8,
                      n_test=12, batch_size=8, n_boot=20, ablations=ABLATIONS, log=None)
    recs = {r["method"]: r for r in out["records"]}
    assert set(recs) == {"mult_cot_sft", "mult_answer_only", "mult_internalized", "mult_internalized_no_smoothing", "mult_internalized_no_reset"}
    s = out["sizes"]
    S = math.ceil(s["max_rationale_tokens"] / 3)                      # stages until every rationale token is gone
    assert s["stage3_steps"] == S * 2 + 2 and s["answer_steps"] == 6 + s["stage3_steps"] and s["k"] == 2
    for r in recs.values():
        assert GRID_FIELDS <= set(r), GRID_FIELDS - set(r)
        assert 0 <= r["accuracy"] <= 1 and r["accuracy_ci"][0] <= r["accuracy"] <= r["accuracy_ci"][1]
        assert r["k"] == 2 and r["preset"] == "tiny" and r["test_source"] == "generated" and r["n_test"] == 12
    assert recs["mult_cot_sft"]["steps"] == 6 and recs["mult_answer_only"]["steps"] == s["answer_steps"]
    for m in ("mult_internalized", "mult_internalized_no_smoothing", "mult_internalized_no_reset"):
        assert recs[m]["steps"] == 6 + s["stage3_steps"], (m, recs[m]["steps"])    # the whole path: CoT, then stage 3
        assert recs[m]["validity"] is None                                          # no rationale fields
    assert recs["mult_internalized_no_smoothing"]["stage3"]["smoothing_lambda"] is None
    assert recs["mult_internalized_no_reset"]["stage3"]["reset_optimizer"] is False
    assert recs["mult_internalized"]["stage3"]["smoothing_lambda"] == 4.0 and recs["mult_internalized"]["stage3"]["reset_optimizer"] is True
    curve = out["curve"]
    assert [c["removed"] for c in curve if c["variant"] == "default"] == [3 * s_ for s_ in range(S + 1)]   # stage 0 = the CoT model
    for v in ("no_smoothing", "no_reset"):
        pts = [c for c in curve if c["variant"] == v]
        assert len(pts) == S and pts[-1]["removed"] >= s["max_rationale_tokens"] and all(c["accuracy"] is not None for c in pts)


def test_ablations_leave_the_cot_model_alone():
    d = mult_data(2, 64, 4, 4)
    m = make_model("tiny", d["tokenizer"], seed=0)
    before = [p.detach().clone() for p in m.parameters()]
    recs, curve = internalization_ablations(m, d["tokenizer"], d["task"], d["train"], d["test"], _cfg(), {"a": {}, "b": dict(smoothing_lambda=None)},
                                            remove_per_stage=8, steps_per_stage=1, n_boot=10)
    assert [r["method"] for r in recs] == ["a", "b"] and curve == []    # no eval_rows: no curve
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))


@pytest.mark.skipif(not (ICOT / "4x4_valid.txt").exists(), reason="shared icot_mult data not found")
def test_icot_file_is_the_test_split_and_kit_lines_match_its_format():
    d = mult_data(4, 300, 10, 5, icot_dir=ICOT)
    icot = load_icot_file(ICOT / "4x4_valid.txt")
    assert d["test_source"].endswith("4x4_valid.txt") and len(d["test"]) == len(icot) == 1000   # n_test is ignored
    assert [r["question"] for r in d["test"]] == [r["question"] for r in icot]
    assert [r["answer"] for r in d["test"]] == [r["answer"] for r in icot]
    assert not {r["question"] for r in d["train"]} & {r["question"] for r in icot}               # disjoint from training
    task = d["task"]
    for r in icot[:200]:   # the kit's training text of a published problem is the published line
        assert (task.format_prompt(r["question"]) + task.format_completion(r["rationale"], r["answer"])).replace("|| ", "||") == r["line"]
    for r in d["train"]:   # and its own generated 4x4 problems are lines of the same format
        line = (task.format_prompt(r["question"]) + task.format_completion(r["rationale"], r["answer"])).replace("|| ", "||")
        p = parse_mult_line(line)
        assert p["k"] == 4 and int(p["answer"]) == p["a"] * p["b"] and len(line.split(" #### ")[1].split()) == 8
        assert task.check_rationale(p["rationale"], p["question"])["valid"]
    assert mult_data(4, 10, 2, 3, icot_dir=Path("/nonexistent"))["test_source"] == "generated"


# --- CODI's ablation grids --------------------------------------------------------------------------------------------
def test_ablation_grid_records_and_variants():
    "The `paper` grid: one record per variant from the same start; gamma=0 has no distillation term; no projection, no projection parameters."
    from cotdistill.tasks import get_task
    task = get_task("arith")
    ds = task.splits(seed=0, n_train=64, n_validation=4, n_test=16, hard=False)
    tk = build_tokenizer(task.vocabulary_texts())
    data = encode_codi(tk, [task.format_prompt(q) for q in ds["train"]["question"]],
                       [task.format_completion(r, a) for r, a in zip(ds["train"]["rationale"], ds["train"]["answer"])])
    rows = [ds["test"][i] for i in range(16)]
    start = make_model("tiny", tk, seed=0)
    before = {k: v.clone() for k, v in start.state_dict().items()}
    import copy
    kw = dict(base=dict(K=2), steps=3, batch_size=16, lr=1e-2, speed_reps=2, n_boot=50, teacher_max_new_tokens=40, log=None)
    recs, per = codi_ablation_grid(lambda: copy.deepcopy(start), tk, task, data, rows, eval_every=2, **kw)
    assert [r["variant"] for r in recs] == list(CODI_ABLATIONS) == ["default", "gamma0", "no_projection"]
    assert set(per) == set(CODI_ABLATIONS) and all(len(v) == 16 for v in per.values())
    assert all(torch.equal(before[k], v) for k, v in start.state_dict().items())   # each variant trains its own copy
    by = {r["variant"]: r for r in recs}
    for r in recs:
        for k in ("accuracy", "accuracy_ci", "diff_vs_default", "p_mcnemar_vs_default", "problems_per_s", "teacher_task_accuracy",
                  "steps", "train_seconds", "n_eval", "settings", "final_losses", "curve", "projection_params"):
            assert k in r, (r["variant"], k)
        assert r["steps"] == 3 and r["n_eval"] == 16 and 0 <= r["accuracy"] <= 1 and 0 <= r["teacher_task_accuracy"] <= 1
        assert r["accuracy_ci"][0] <= r["accuracy"] <= r["accuracy_ci"][1] and 0 <= r["p_mcnemar_vs_default"] <= 1
        assert len(r["problems_per_s_runs"]) == 2 and r["problems_per_s"] > 0 and [c["step"] for c in r["curve"]] == [2, 3]
        assert r["settings"]["K"] == 2 and r["K"] == 2
    acc = lambda v: np.mean([x["correct"] for x in per[v]])
    assert by["gamma0"]["diff_vs_default"] == pytest.approx(acc("gamma0") - acc("default"))
    assert by["default"]["diff_vs_default"] == 0 and by["default"]["p_mcnemar_vs_default"] == 1.0
    # gamma = 0: the logged loss is the two cross-entropies alone; the default's includes the distillation term
    g0, d = by["gamma0"]["final_losses"], by["default"]["final_losses"]
    assert by["gamma0"]["gamma"] == 0 and g0["loss"] == pytest.approx(g0["ce_student"] + g0["ce_teacher"], rel=1e-5)
    assert d["distill"] > 0 and d["loss"] == pytest.approx(d["ce_student"] + d["distill"] + d["ce_teacher"], rel=1e-5)
    assert by["default"]["projection_params"] > 0 and by["gamma0"]["projection_params"] == by["default"]["projection_params"]
    assert by["no_projection"]["projection_params"] == 0 and by["no_projection"]["projection"] is False
    # the same start, data, steps and seed: two variants with the same settings give the same losses and answers
    twins, tper = codi_ablation_grid(lambda: copy.deepcopy(start), tk, task, data, rows, variants={"a": {}, "b": {}}, **kw)
    assert twins[0]["final_losses"] == twins[1]["final_losses"] == d
    assert [x["prediction"] for x in tper["a"]] == [x["prediction"] for x in tper["b"]] == [x["prediction"] for x in per["default"]]
    with pytest.raises(ValueError, match="no variants"): codi_ablation_grid(lambda: start, tk, task, data, rows, variants={}, **kw)


def test_codi_mult_grid_references_and_paired_tests():
    "CODI on k x k multiplication: both references from scratch (answer-only as long as CoT + CODI), each variant tested against the floor and the default."
    out = codi_mult_grid(k=2, preset="tiny", cot_steps=4, steps=3, n_train=120, n_validation=4, n_test=24, batch_size=16, lr=1e-2,
                         variants={"default": dict(K=2), "gamma0": dict(K=2, gamma=0.0)}, n_boot=50, log=None)
    assert out["kind"] == "codi_mult" and out["n_eval"] == 24 and out["n_train"] == 120 and out["test_source"] == "generated"
    assert out["cot_record"]["method"] == "mult_cot_sft" and out["cot_record"]["steps"] == 4
    assert out["answer_only_record"]["method"] == "mult_answer_only" and out["answer_only_record"]["steps"] == 4 + 3
    assert out["reference"]["cot_sft_accuracy"] == out["cot_record"]["accuracy"]
    assert set(out["correct"]) == {"mult_answer_only", "codi_default", "codi_gamma0"} and all(len(v) == 24 for v in out["correct"].values())
    by = {r["variant"]: r for r in out["records"]}
    for name, r in by.items():
        assert r["steps"] == 3 and r["settings"]["K"] == 2 and r["accuracy"] == pytest.approx(np.mean(out["correct"][f"codi_{name}"]))
        diff = np.mean(out["correct"][f"codi_{name}"]) - np.mean(out["correct"]["mult_answer_only"])
        assert r["diff_vs_answer_only"] == pytest.approx(diff) and 0 <= r["p_mcnemar_vs_answer_only"] <= 1
    assert by["gamma0"]["diff_vs_default"] == pytest.approx(np.mean(out["correct"]["codi_gamma0"]) - np.mean(out["correct"]["codi_default"]))


# --- the README's tables are generated from the committed results ----------------------------------------------------
def test_readme_tables_are_the_committed_results():
    "Every generated block of README.md equals what `python -m cotdistill.experiments readme` builds from the committed JSON."
    from cotdistill.experiments import GENERATED, fill_generated
    root = Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text()
    names = set(re.findall(r"<!-- generated:([\w:.-]+) -->", text))
    assert {"quick-methods", "quick-run", "benchmarks", "learnability", "teacher"} <= names <= set(GENERATED), names
    assert fill_generated(text, root / "reports") == text, "README.md's tables are stale: run python -m cotdistill.experiments readme"
