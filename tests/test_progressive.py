"""Progressive distillation (09_progressive): removal smoothing, the removal schedule, the optimizer reset,
stage 1's masked & shuffled inputs, stage 2's GRPO steps, and clear errors on bad masking settings. Tiny models, seconds."""
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from cotdistill.grpo import GRPOConfig, split_steps
from cotdistill.models import build_tokenizer, make_model
from cotdistill.progressive import (InternalizationObjective, ProgressiveCoTDistillation, ReconstructionObjective, check_masking,
                                    curriculum_data, internalization_data, internalize, masked_completion_data, reconstruction_data,
                                    reconstruction_example, remove_front, removal_schedule, sample_offsets, smoothing_probs,
                                    stage1_reconstruction, stage2_grpo)
from cotdistill.tasks import get_task
from cotdistill.train import TrainConfig, pad_collate


@pytest.fixture(scope="module")
def setup():
    task = get_task("arith", digit_order="lsd")
    rows = task.splits(seed=0, n_train=16, n_validation=2, n_test=2, hard=False)["train"].to_list()
    tok = build_tokenizer(task.vocabulary_texts())
    return task, rows, tok


def _cfg(**kw):
    return TrainConfig(**{**dict(batch_size=4, lr=1e-2, warmup_steps=1, log_every=1, ckpt_every=0, progress=False, seed=0), **kw})


def _adam_step(run_dir) -> int:
    st = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["optimizer"]["state"]
    return int(next(iter(st.values()))["step"])


# --- removal smoothing -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lam", [4.0, 1.0, 0.5])
def test_smoothing_matches_exp_minus_lambda_o(lam):
    p = smoothing_probs(lam, max_offset=60)
    analytic = np.exp(-lam * np.arange(61)); analytic /= analytic.sum()
    np.testing.assert_allclose(p, analytic, rtol=1e-12)
    np.testing.assert_allclose(p[1:] / p[:-1], math.exp(-lam), rtol=1e-9)            # P(o+1)/P(o) = e^{-λ}
    o = sample_offsets(200_000, lam, np.random.default_rng(1), max_offset=60)
    emp = np.bincount(o, minlength=61) / len(o)
    for k in range(4):                                                               # empirical vs analytic within 4 sigma
        sigma = math.sqrt(p[k] * (1 - p[k]) / len(o))
        assert abs(emp[k] - p[k]) < 4 * sigma + 1e-4, (k, emp[k], p[k])
    assert abs(o.mean() - (p * np.arange(61)).sum()) < 0.02


def test_no_smoothing_and_bad_lambda():
    assert sample_offsets(10, None, np.random.default_rng(0)).tolist() == [0] * 10
    assert smoothing_probs(math.inf)[0] == 1.0
    with pytest.raises(ValueError, match="> 0"): smoothing_probs(0.0)


# --- removal schedule ----------------------------------------------------------------------------------------------
def test_schedule_reaches_zero_rationale(setup):
    task, rows, tok = setup
    data = internalization_data(tok, task, rows)
    sched = removal_schedule(max(data["n_rationale"]), 8)
    assert sched == [8 * s for s in range(1, len(sched) + 1)]                       # Δ tokens more per stage
    assert sched[-1] >= max(data["n_rationale"]) > sched[-2] if len(sched) > 1 else True
    ids, n_p, n_r = data["input_ids"][0], data["n_prompt"][0], data["n_rationale"][0]
    for k in (0, 3, 8):
        assert len(remove_front(ids, n_p, n_r, k)) == len(ids) - min(k, n_r)
        assert remove_front(ids, n_p, n_r, k)[n_p:] == ids[n_p + min(k, n_r):]        # removed from the front
    last = remove_front(ids, n_p, n_r, sched[-1])                                   # the last stage: prompt -> ' #### a' </s>
    assert tok.decode(last[n_p:-1]).strip() == task.format_completion("", rows[0]["answer"]).strip()


def test_objective_removes_stage_times_delta(setup):
    task, rows, tok = setup
    data = internalization_data(tok, task, rows)
    b = pad_collate({k: ([np.asarray(v) for v in data[k]] if k in ("input_ids", "labels") else data[k]) for k in data}, range(8), tok.pad_token_id)
    m = make_model("tiny", tok, seed=0)
    obj = InternalizationObjective(5, stage=1, steps_per_stage=2, smoothing_lambda=None, n_stages=3)
    for step, stage in [(0, 1), (1, 1), (2, 2), (5, 3), (50, 3)]:
        obj.on_step(step)
        _, logs = obj(m, b)
        assert logs["stage"] == stage and logs["removed"] == 5 * stage
        assert logs["rationale_left"] == pytest.approx(np.mean([max(r - 5 * stage, 0) for r in data["n_rationale"][:8]]))


def test_gradual_removal_one_token_at_a_time(setup):
    obj = InternalizationObjective(8, stage=1, steps_per_stage=16, smoothing_lambda=None, n_stages=2, gradual=True)
    got = [(obj.on_step(t), obj.removed())[1] for t in range(40)]
    assert got[0] == 0 and got[1] == 1 and got[15] == 8 and got[31] == 16 and got[-1] == 16   # +1 token every 2 steps, capped at SΔ
    assert all(b - a in (0, 1) for a, b in zip(got, got[1:]))
    with pytest.raises(ValueError, match="steps_per_stage"): InternalizationObjective(8, gradual=True)


def test_final_steps_extend_the_last_stage(setup, tmp_path):
    task, rows, tok = setup
    for reset in (True, False):
        h = internalize(make_model("tiny", tok, seed=0), tok, task, rows, _cfg(), remove_per_stage=16, steps_per_stage=2,
                        reset_optimizer=reset, gradual=True, final_steps=3, out_dir=tmp_path / str(reset))
        assert [r["steps"] for r in h] == [2] * (len(h) - 1) + [5]


# --- optimizer reset ------------------------------------------------------------------------------------------------
def test_optimizer_reset_vs_carried(setup, tmp_path):
    task, rows, tok = setup
    h = internalize(make_model("tiny", tok, seed=0), tok, task, rows, _cfg(), remove_per_stage=16, steps_per_stage=3,
                    reset_optimizer=True, out_dir=tmp_path / "reset")
    S = len(h)
    assert S >= 2
    assert [_adam_step(tmp_path / "reset" / f"stage_{s}") for s in range(1, S + 1)] == [3] * S   # a fresh AdamW each stage
    h2 = internalize(make_model("tiny", tok, seed=0), tok, task, rows, _cfg(), remove_per_stage=16, steps_per_stage=3,
                     reset_optimizer=False, out_dir=tmp_path / "carry")
    assert len(h2) == S and [r["removed"] for r in h2] == [r["removed"] for r in h]
    assert _adam_step(tmp_path / "carry" / "all_stages") == 3 * S                              # one optimizer through all stages


# --- stage 1 --------------------------------------------------------------------------------------------------------
def test_stage1_inputs_masked_shuffled_targets_ordered(setup):
    task, rows, tok = setup
    shuffled = 0
    for i, r in enumerate(rows):
        steps, _ = split_steps(r["rationale"])
        p, t = reconstruction_example(task, r["question"], r["rationale"], r["answer"], 0.5, "step", rng=i)
        assert t == task.format_completion(r["rationale"], r["answer"])              # ordered, complete target
        hint = split_steps(p[len(task.format_prompt(r["question"])):].rsplit("<sep>", 1)[0])[0]
        assert hint.count("<mask>") == round(0.5 * len(steps))                       # masked
        kept = [s for s in hint if s != "<mask>"]
        assert all(s in steps for s in kept) and "<mask>" in p
        shuffled += [s for s in hint if s != "<mask>"] != [s for s in steps if s in kept] or \
                    [j for j, s in enumerate(hint) if s == "<mask>"] != sorted(j for j, s in enumerate(hint) if s == "<mask>")
        tok_p, _ = reconstruction_example(task, r["question"], r["rationale"], r["answer"], 0.3, "token", rng=i)
        assert "<mask>" in tok_p
    assert shuffled > 0                                                              # some hints are out of order
    # permutation check over many seeds: the hint's step order varies
    r = max(rows, key=lambda r: len(split_steps(r["rationale"])[0]))
    orders = {reconstruction_example(task, r["question"], r["rationale"], r["answer"], 0.0, "step", rng=s)[0] for s in range(20)}
    assert len(orders) > 1
    d = reconstruction_data(task, rows, tok, 0.3, "step", seed=0, copies=1, plain_share=0.0)
    for p, c, ids, y in zip(d["prompt"], d["completion"], d["input_ids"], d["labels"]):
        n_p = sum(v == -100 for v in y)
        assert tok.decode(ids[n_p:-1]) == c and "<sep>" in p                        # loss only on the ordered target


def test_stage1_trains(setup):
    task, rows, tok = setup
    m = make_model("tiny", tok, seed=0); before = [p.detach().clone() for p in m.parameters()]
    res = stage1_reconstruction(m, tok, task, rows, _cfg(max_steps=2))
    assert res["steps"] == 2 and any(not torch.equal(a, b) for a, b in zip(before, m.parameters()))


def test_stage1_hint_share_anneals_to_plain(setup):
    task, rows, tok = setup
    d = curriculum_data(task, rows, tok, 0.3, "step", seed=0)
    for x, y, hx, hy in zip(d["input_ids"], d["labels"], d["hint_input_ids"], d["hint_labels"]):
        assert [v for v in y if v != -100] == [v for v in hy if v != -100]          # one ordered target, two prompts
        assert len(hx) > len(x)                                                      # the hinted prompt is longer
    obj = ReconstructionObjective(0.6, anneal_steps=10)
    shares = [(obj.on_step(t), obj.share())[1] for t in (0, 5, 9, 10, 100)]
    assert shares == [0.6, 0.3, pytest.approx(0.06), 0.0, 0.0]
    b = pad_collate({k: [np.asarray(v) for v in d[k]] for k in d}, range(8), tok.pad_token_id)
    m = make_model("tiny", tok, seed=0)
    obj.on_step(10); loss, logs = obj(m, b)                                          # after the anneal: the plain LM loss
    assert logs["hinted"] == 0.0 and loss.item() == pytest.approx(m(input_ids=b["input_ids"], labels=b["labels"]).loss.item(), abs=1e-5)
    loss1, logs1 = ReconstructionObjective(1.0)(m, b)                                # all hinted: the hinted LM loss
    assert logs1["hinted"] == 1.0 and loss1.item() == pytest.approx(m(input_ids=b["hint_input_ids"], labels=b["hint_labels"]).loss.item(), abs=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"): ReconstructionObjective(1.5)


# --- stage 2 --------------------------------------------------------------------------------------------------------
def test_stage2_grpo_changes_parameters(setup):
    task, rows, tok = setup
    d = masked_completion_data(tok, task, rows, 0.3, "step", plain_share=0.0)
    assert all(p.endswith("<sep>") and "<mask>" in p for p in d["prompt"]) and d["answer"] == [str(r["answer"]) for r in rows]
    m = make_model("tiny", tok, seed=0); before = [p.detach().clone() for p in m.parameters()]
    res = stage2_grpo(m, tok, task, rows, _cfg(max_steps=2, batch_size=2),
                      GRPOConfig(num_generations=4, max_completion_length=12, beta=0.0, seed=0))
    assert res["steps"] == 2 and any(not torch.equal(a, b) for a, b in zip(before, m.parameters()))


# --- bad input --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio,level,msg", [(0.3, "word", r"allowed: \['token', 'step'\]"), (1.5, "step", r"\[0, 1\]"),
                                             (-0.1, "token", r"\[0, 1\]"), ("0.3", "step", r"\[0, 1\]")])
def test_bad_masking_settings(setup, ratio, level, msg):
    task, rows, tok = setup
    with pytest.raises(ValueError, match=msg): check_masking(ratio, level)
    with pytest.raises(ValueError, match=msg): reconstruction_data(task, rows, tok, ratio, level)
    with pytest.raises(ValueError, match=msg): masked_completion_data(tok, task, rows, ratio, level)
    with pytest.raises(ValueError, match=msg): ProgressiveCoTDistillation(None, make_model("tiny", tok), tok, task, mask_ratio=ratio, mask_level=level)


def test_facade_runs_all_stages(setup):
    task, rows, tok = setup
    pcd = ProgressiveCoTDistillation(None, make_model("tiny", tok, seed=0), tok, task, stage1_steps=2, stage2_steps=1, batch_size=4,
                                     prompts_per_step=2, num_generations=2, max_completion_length=8, remove_per_stage=40, steps_per_stage=1)
    h = pcd.progressive_train(rows, internalize=True)
    assert h["stage1"]["steps"] == 2 and h["stage2"]["steps"] == 1 and len(h["stage3"]) >= 1
