"""cotdistill.sft: each objective against an independent computation, masks, training changes parameters for every
method, GKD's on-policy path, vocabulary errors, run_method's record and the TRL benchmark harness."""
import json
import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("COTDISTILL_THREADS", "1")

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cotdistill.losses import IGNORE_INDEX, generalized_jsd_loss
from cotdistill.metrics import METRIC_FIELDS
from cotdistill.models import build_tokenizer, make_model
from cotdistill.records import TEXT_METHODS
from cotdistill.sft import (METHODS, ConsistencyObjective, GKDObjective, PrefixedTask, StepByStepObjective,
                            bench_sft_vs_trl, check_method, check_shared_vocab, cross_entropy_objective, encode_samples,
                            make_objective, method_data, run_method, sft_tokenizer, task_prefixes)
from cotdistill.tasks import get_task
from cotdistill.train import TrainConfig, pad_collate, train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def env():
    task = get_task("arith", digit_order="lsd")
    dd = task.splits(seed=0, n_train=16, n_validation=2, n_test=6, hard=False)
    tok = sft_tokenizer(task)
    return dict(task=task, rows=dd["train"].to_list(), test=dd["test"].to_list(), tok=tok,
                teacher=make_model("tiny", tok, seed=1))


def batch(ds, n=4, pad=0):
    cols = {k: ([np.asarray(v) for v in ds[k][:n]] if k != "prompt" else ds[k][:n]) for k in ds.column_names}
    return pad_collate(cols, range(n), pad)


def shifted_ce(logits, labels, mask=None):
    "Mean CE over labelled (and masked) shifted positions, by PyTorch."
    y = labels[:, 1:]
    m = y != IGNORE_INDEX if mask is None else (y != IGNORE_INDEX) & mask[:, 1:]
    return F.cross_entropy(logits[:, :-1][m], y[m])


# ---- data -------------------------------------------------------------------------------------------
def test_method_names_match_design():
    assert list(METHODS) == ["answer_only", "cot_sft", "cot_sft_unfiltered", "step_by_step", "cot_sft_continued", "cot_sft_unfiltered_continued",
                             "cot_sft_consistency", "on_policy", "on_policy_verbose", "gkd"]
    assert set(METHODS) <= set(TEXT_METHODS)   # the record schema's names
    assert [m for m, s in METHODS.items() if s["track"] == "scratch"] == ["answer_only", "cot_sft", "cot_sft_unfiltered", "step_by_step"]
    with pytest.raises(ValueError, match="allowed"): check_method("sft")


def test_labels_only_on_completion(env):
    task, tok, rows = env["task"], env["tok"], env["rows"]
    for m in METHODS:
        d = method_data(m, rows, task, tok)
        for x, y, r in zip(d["input_ids"], d["labels"], rows):
            pre = task_prefixes(tok)
            prompt = task.format_prompt(r["question"])
            if m == "step_by_step": prompt = f"{pre['rationale']} {prompt}"
            n = len(tok(prompt)["input_ids"])
            assert y[:n] == [IGNORE_INDEX] * n and y[n:] == x[n:], m
            assert x[-1] == tok.eos_token_id


def test_answer_only_and_step_by_step_targets(env):
    task, tok, rows = env["task"], env["tok"], env["rows"]
    ao = method_data("answer_only", rows + rows, task, tok)
    assert len(ao) == len(rows)
    target = tok.decode([y for y in ao[0]["labels"] if y != IGNORE_INDEX][:-1])
    assert target == f" #### {task.format_answer(rows[0]['answer'])}"
    sb = method_data("step_by_step", rows, task, tok)
    assert tok.decode([y for y in sb[0]["labels"] if y != IGNORE_INDEX][:-1]) == " " + rows[0]["rationale"]
    assert tok.decode([y for y in sb[0]["label_labels"] if y != IGNORE_INDEX][:-1]) == target
    assert tok.decode(sb[0]["label_input_ids"][:2]) == "<s>[label]"


def test_prefix_fallback_and_error(env):
    plain = build_tokenizer(env["task"].vocabulary_texts())
    assert task_prefixes(plain) == {"label": "<extra_0>", "rationale": "<extra_1>"}
    class Stub:  # a tokenizer that knows neither the prefixes nor spare tokens
        unk_token_id = 3
        def __call__(self, text, add_special_tokens=False): return {"input_ids": [3]}
    with pytest.raises(ValueError, match="no single token"): task_prefixes(Stub())


def test_answer_mask_marks_answer_tokens(env):
    task, tok, rows = env["task"], env["tok"], env["rows"]
    d = method_data("cot_sft_consistency", rows, task, tok)
    for x, y, a, r in zip(d["input_ids"], d["labels"], d["answer_mask"], rows):
        ans = [i for i, k in zip(x, a) if k]
        assert tok.decode(ans[:-1]) == " " + task.format_answer(r["answer"]) and ans[-1] == tok.eos_token_id
        assert all(y[i] != IGNORE_INDEX for i, k in enumerate(a) if k)


def test_bad_rows(env):
    with pytest.raises(ValueError, match=r"lacks field\(s\) \['rationale', 'answer'\]"):
        method_data("cot_sft", [{"question": "q"}], env["task"], env["tok"])
    with pytest.raises(ValueError, match="empty"): method_data("cot_sft", [], env["task"], env["tok"])
    # prompt/completion columns alone are enough for the CoT methods
    d = method_data("cot_sft", [{"prompt": "Q Answer:", "completion": " 1 + 1 = 2 #### 2"}], env["task"], env["tok"])
    assert len(d) == 1


# ---- objectives == independent computations -----------------------------------------------------------
def test_cross_entropy_objectives(env):
    task, tok = env["task"], env["tok"]
    model = make_model("tiny", tok, seed=0)
    for m in ("answer_only", "cot_sft", "cot_sft_unfiltered"):
        b = batch(method_data(m, env["rows"], task, tok))
        loss, _ = make_objective(m)(model, b)
        assert torch.allclose(loss, shifted_ce(model(input_ids=b["input_ids"]).logits, b["labels"]), atol=1e-5)


def test_consistency_objective(env):
    task, tok, teacher = env["task"], env["tok"], env["teacher"]
    model = make_model("tiny", tok, seed=0)
    b = batch(method_data("cot_sft_consistency", env["rows"], task, tok))
    for w, tau in ((0.1, 1.0), (0.5, 2.0)):
        loss, logs = ConsistencyObjective(teacher, w_consistency=w, temperature=tau)(model, b)
        s, t = model(input_ids=b["input_ids"]).logits, teacher(input_ids=b["input_ids"]).logits
        am = b["answer_mask"].bool()
        rat = (b["labels"][:, 1:] != IGNORE_INDEX) & ~am[:, 1:]
        lp_s, lp_t = F.log_softmax(s[:, :-1][rat] / tau, -1), F.log_softmax(t[:, :-1][rat] / tau, -1)
        kl = (lp_t.exp() * (lp_t - lp_s)).sum(-1).mean() * tau ** 2
        want = shifted_ce(s, b["labels"], ~am) + shifted_ce(s, b["labels"], am) + w * kl
        assert torch.allclose(loss, want, atol=1e-5), (loss, want)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())


def test_step_by_step_objective(env):
    task, tok = env["task"], env["tok"]
    model = make_model("tiny", tok, seed=0)
    b = batch(method_data("step_by_step", env["rows"], task, tok))
    lab = shifted_ce(model(input_ids=b["label_input_ids"]).logits, b["label_labels"])
    rat = shifted_ce(model(input_ids=b["input_ids"]).logits, b["labels"])
    for alpha in (0.5, 0.2, 1.0):
        loss, logs = StepByStepObjective(alpha)(model, b)
        assert torch.allclose(loss, alpha * lab + (1 - alpha) * rat, atol=1e-5)
    assert math.isclose(logs["label"], lab.item(), rel_tol=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"): StepByStepObjective(1.5)


def test_gkd_off_policy_is_jsd_on_data(env):
    task, tok, teacher = env["task"], env["tok"], env["teacher"]
    model = make_model("tiny", tok, seed=0)
    b = batch(method_data("gkd", env["rows"], task, tok))
    loss, logs = GKDObjective(teacher, tok, lmbda=0.0, beta=0.3, temperature=1.0)(model, b)
    want = generalized_jsd_loss(model(input_ids=b["input_ids"]).logits, teacher(input_ids=b["input_ids"]).logits, b["labels"], beta=0.3)
    assert torch.allclose(loss, want, atol=1e-6) and logs["on_policy"] == 0.0


def test_gkd_on_policy_samples_from_the_student(env, monkeypatch):
    task, tok, teacher = env["task"], env["tok"], env["teacher"]
    model = make_model("tiny", tok, seed=0)
    b = batch(method_data("gkd", env["rows"], task, tok))
    calls = []
    import cotdistill.sft as sft_module   # GKDObjective samples through the name sft imported from evaluate
    real = sft_module.generate_batched
    def spy(m, *a, **kw):
        calls.append(m); return real(m, *a, **kw)
    monkeypatch.setattr(sft_module, "generate_batched", spy)
    obj = GKDObjective(teacher, tok, lmbda=1.0, max_new_tokens=6, seed=3)
    obj.on_step(5)
    loss, logs = obj(model, b)
    assert calls == [model] and logs["on_policy"] == 1.0 and obj.n_on_policy == 1  # the student sampled, not the teacher
    assert torch.isfinite(loss) and loss.requires_grad
    # a fixed sampler: the loss is the JSD on the sampled sequences; a cut completion gets no </s>
    samples = [{"text": " 1 + 2 = 3", "finish_reason": "length"}] * 4
    obj2 = GKDObjective(teacher, tok, lmbda=1.0, sampler=lambda m, p, s: samples)
    loss2, _ = obj2(model, b)
    e = encode_samples(tok, b["prompt"], samples)
    assert e["input_ids"][0, -1].item() != tok.eos_token_id
    want = generalized_jsd_loss(model(input_ids=e["input_ids"]).logits, teacher(input_ids=e["input_ids"]).logits, e["labels"], temperature=0.9)
    assert torch.allclose(loss2, want, atol=1e-6)


def test_vocab_mismatch(env):
    tok = env["tok"]
    other = make_model("tiny", build_tokenizer(["entirely different words"]))
    student = make_model("tiny", tok)
    with pytest.raises(ValueError, match="shared vocabulary"): check_shared_vocab(student, other)
    with pytest.raises(ValueError, match="tokenizers differ"):
        check_shared_vocab(student, env["teacher"], tok, build_tokenizer(["x"]))
    for m in ("cot_sft_consistency", "gkd"):
        with pytest.raises(ValueError, match="shared vocabulary"):
            run_method(m, student, tok, env["task"], env["rows"], TrainConfig(max_steps=1, batch_size=4), teacher_model=other)
        with pytest.raises(ValueError, match="needs a teacher_model"):
            run_method(m, student, tok, env["task"], env["rows"], TrainConfig(max_steps=1, batch_size=4))


# ---- training and the record -------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(METHODS))
def test_train_changes_parameters(env, method, tmp_path):
    task, tok = env["task"], env["tok"]
    model = make_model("tiny", tok, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    obj = make_objective(method, env["teacher"], tok, lmbda=1.0, gkd_max_new_tokens=6)
    res = train(model, method_data(method, env["rows"], task, tok), obj,
                TrainConfig(max_steps=3, batch_size=4, lr=1e-2, warmup_steps=1, progress=False), tmp_path, save_model=False)
    assert res["steps"] == 3 and math.isfinite(res["loss"])
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert all(not p.requires_grad for p in env["teacher"].parameters()) or not METHODS[method]["teacher"]


def test_run_method_record(env, tmp_path):
    task, tok = env["task"], env["tok"]
    cfg = TrainConfig(max_steps=2, batch_size=4, lr=1e-2, warmup_steps=1, eval_every=1, log_every=1, progress=False, seed=0)
    teacher_records = [dict(id=r["id"], correct=True, rationale=r["rationale"], rationale_tokens=len(r["rationale"].split()))
                       for r in env["test"]]
    for m in ("cot_sft", "step_by_step"):
        rec = run_method(m, make_model("tiny", tok), tok, task, env["rows"], cfg, out_dir=tmp_path / m, eval_data=env["test"],
                         report_dir=tmp_path / "report", max_new_tokens=12, n_eval_during=2, n_boot=50,
                         teacher_records=teacher_records, extra={"profile": "test"})
        assert set(METRIC_FIELDS) <= set(rec) and rec["method"] == m and rec["profile"] == "test"
        assert rec["teacher_accuracy"] == 1.0 and rec["steps"] == 2 and rec["n_params"] > 0
        assert len(rec["accuracy_ci"]) == 2
        evals = [r for r in map(json.loads, open(rec["log_path"])) if "eval_accuracy" in r]
        assert [r["step"] for r in evals] == [1, 2]
        assert len(open(rec["records_path"]).readlines()) == len(env["test"])
    assert rec["validity"] is None and rec["length_ratio"] is None   # step-by-step answers without a rationale
    lines = [json.loads(l) for l in open(tmp_path / "report" / "metrics.jsonl")]
    assert [r["method"] for r in lines] == ["cot_sft", "step_by_step"]
    assert PrefixedTask(task, "[label]").format_prompt("Q?") == "[label] Q? Answer:"


def test_bench_runs_at_tiny_size():
    rec = bench_sft_vs_trl("tiny", n_examples=32, batch_size=16, repeats=1)
    assert rec["name"] == "sft_tokens_per_s_vs_trl" and rec["target"] == 1.5 and rec["ratio"] > 0
    d = rec["detail"]
    assert d["runs"]["kit"][0]["tokens"] > 0 and d["runs"]["trl"][0]["tokens"] > 0
    # both sides train on the same tokens (TRL adds no BOS the kit lacks, or the counts would differ)
    assert abs(d["runs"]["kit"][0]["tokens"] - d["runs"]["trl"][0]["tokens"]) <= 32
    with pytest.raises(ValueError, match="multiple of batch_size"): bench_sft_vs_trl("tiny", n_examples=30, batch_size=16)
    with pytest.raises(ValueError, match="allowed"): bench_sft_vs_trl("tiny", trl_mode="fast")
