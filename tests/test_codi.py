"CODI (cotdistill.codi): the distillation loss, the latent loop and its KV cache, gradients, both architectures."
import os
os.environ["HF_HUB_OFFLINE"] = "1"
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from cotdistill.codi import (CODIObjective, codi_distill_loss, codi_generate, continue_rollout, encode_codi, evaluate_codi,
                             latent_rollout, left_pad, load_codi, make_projection, probe_thoughts, save_codi, split_completion)
from cotdistill.evaluate import cache_kwarg
from cotdistill.models import build_tokenizer, make_model
from cotdistill.train import TrainConfig, _columns, pad_collate, train

torch.set_num_threads(1)

QUESTIONS = [f"Alice has {a} apples. She buys {b} more and eats {c}. How many apples does she have? Answer:"
             for a, b, c in [(3, 4, 2), (12, 5, 7), (9, 1, 3), (20, 13, 8), (7, 7, 7), (15, 2, 11), (6, 30, 4), (41, 2, 9)]]
def _completion(q):
    a, b, c = (int(w) for w in q.replace(".", " ").split() if w.isdigit())
    return f" {a} + {b} = {a + b} ; {a + b} - {c} = {a + b - c} #### {a + b - c}"
COMPLETIONS = [_completion(q) for q in QUESTIONS]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(QUESTIONS + COMPLETIONS)


@pytest.fixture(scope="module")
def enc(tok):
    return encode_codi(tok, QUESTIONS, COMPLETIONS)


def _batch(tok, enc, idx):
    return pad_collate(_columns(enc, None, None), list(idx), tok.pad_token_id)


def test_distill_loss_hand_computation():
    s1, t1 = torch.tensor([[0.0, 2.0], [1.0, 1.0]]), torch.tensor([[0.5, 0.0], [1.0, 3.0]])
    s2, t2 = torch.tensor([[3.0, 1.0], [1.0, 1.0]]), torch.tensor([[1.0, 1.0], [1.0, 1.5]])
    # SmoothL1 (beta 1): |d| < 1 -> d^2/2, else |d| - 1/2; mean over the 4 entries
    sl1 = lambda d: np.mean([0.5 * x * x if abs(x) < 1 else abs(x) - 0.5 for x in d])
    l1 = sl1([-0.5, 2.0, 0.0, -2.0]) / np.std([0.5, 0.0, 1.0, 3.0], ddof=1)
    l2 = sl1([2.0, 0.0, 0.0, -0.5]) / np.std([1.0, 1.0, 1.0, 1.5], ddof=1)
    assert codi_distill_loss([s1, s2], [t1, t2]).item() == pytest.approx((l1 + l2) / 2, rel=1e-6)
    assert codi_distill_loss([s1, s2], [t1, t2], div_std=False).item() == pytest.approx(
        (sl1([-0.5, 2.0, 0.0, -2.0]) + sl1([2.0, 0.0, 0.0, -0.5])) / 2, rel=1e-6)
    mse = np.mean(np.square([-0.5, 2.0, 0.0, -2.0])) / np.var([0.5, 0.0, 1.0, 3.0], ddof=1)
    assert codi_distill_loss([s1], [t1], kind="l2").item() == pytest.approx(mse, rel=1e-6)
    # the teacher side is detached
    t = t1.clone().requires_grad_(); s = s1.clone().requires_grad_()
    codi_distill_loss([s], [t]).backward()
    assert t.grad is None and s.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="allowed"): codi_distill_loss([s1], [t1], kind="cos")
    with pytest.raises(ValueError, match="layers"): codi_distill_loss([s1], [t1, t2])


def test_split_and_encode_positions(tok, enc):
    assert split_completion(" 1 + 2 = 3 #### 3") == (" 1 + 2 = 3", " ####", " 3")
    with pytest.raises(ValueError, match="no answer marker"): split_completion(" 1 + 2 = 3")
    bot, eot = tok.convert_tokens_to_ids(["<bot>", "<eot>"])
    for i in range(len(QUESTIONS)):
        t, a = enc["input_ids"][i], enc["answer_ids"][i]
        tp, ap = enc["teacher_pos"][i], enc["answer_pos"][i]
        assert tok.convert_ids_to_tokens(t[tp]) == " ####" and tok.convert_ids_to_tokens(a[ap]) == " ####"
        assert t[tp + 1:] == a[ap + 1:] and a[-1] == tok.eos_token_id   # same answer tokens after both positions
        assert enc["question_ids"][i][-1] == bot and a[0] == eot and enc["question_len"][i] == len(enc["question_ids"][i])
        assert enc["labels"][i][:len(enc["question_ids"][i]) - 1] == [-100] * (len(enc["question_ids"][i]) - 1)
        assert enc["answer_labels"][i] == [-100] + a[1:]
    with pytest.raises(ValueError, match="completion 1"): encode_codi(tok, QUESTIONS[:2], [COMPLETIONS[0], "no marker"])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        short = encode_codi(tok, QUESTIONS, COMPLETIONS, max_len=min(map(len, enc["input_ids"])))
    assert 1 <= len(short["input_ids"]) < len(QUESTIONS) and any("dropped" in str(x.message) for x in w)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("grad", [True, False])   # training (through the LM) and inference (the base model alone)
def test_latent_steps_feed_one_position_and_grow_cache_by_one(tok, enc, arch, grad):
    model = make_model("tiny", tok, arch=arch, seed=0)
    calls = []
    def spy(mod, args, kwargs, out):   # on the base model: every path goes through it
        ids, emb = kwargs.get("input_ids", args[0] if args else None), kwargs.get("inputs_embeds")
        x = emb if emb is not None else ids
        calls.append((tuple(x.shape[:2]), emb is not None, kwargs[cache_kwarg(model)].get_seq_length()))
    h = model.base_model.register_forward_hook(spy, with_kwargs=True)
    b = _batch(tok, enc, range(4))
    q, m = left_pad(b["question_ids"], b["question_len"])
    assert (m == 0).any()   # a padded batch
    K = 5
    with torch.set_grad_enabled(grad):
        roll = latent_rollout(model, make_projection(32), q, m, K)
    L = q.shape[1]
    assert calls[0] == ((4, L), False, L)
    for k in range(1, K + 1):
        assert calls[k] == ((4, 1), True, L + k)   # one input embedding per step, one more cache position per step
    with torch.set_grad_enabled(grad):
        out = continue_rollout(model, roll, b["answer_ids"], output_hidden_states=True)
    h.remove()
    assert roll.states[0].requires_grad == grad
    assert roll.cache.get_seq_length() == L + K + b["answer_ids"].shape[1]
    assert len(roll.states) == K and roll.states[0].shape == (4, 32) and out.logits.shape[:2] == b["answer_ids"].shape


def test_k_below_one_is_a_clear_error(tok):
    model = make_model("tiny", tok, seed=0)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="number of continuous thoughts"): CODIObjective(32, K=bad)
        with pytest.raises(ValueError, match="number of continuous thoughts"):
            latent_rollout(model, nn.Identity(), torch.tensor([[1, 5, 6]]), K=bad)
        with pytest.raises(ValueError, match="number of continuous thoughts"): codi_generate(model, nn.Identity(), tok, QUESTIONS[:1], K=bad)
    with pytest.raises(ValueError, match="allowed"): CODIObjective(32, loss="kl")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_gradients_reach_the_projection(tok, enc, arch):
    model = make_model("tiny", tok, arch=arch, seed=0)
    obj = CODIObjective.for_model(model, K=3)
    loss, logs = obj(model, _batch(tok, enc, range(6)))
    assert torch.isfinite(loss) and set(logs) == {"ce_student", "distill", "ce_teacher"}
    assert loss.item() == pytest.approx(logs["ce_student"] + logs["distill"] + logs["ce_teacher"], rel=1e-4)
    loss.backward()
    for name, p in obj.projection.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_distillation_alone_sends_gradient_through_thoughts(tok, enc):
    model = make_model("tiny", tok, seed=0)
    obj = CODIObjective.for_model(model, K=2)
    b = _batch(tok, enc, range(4))
    # rebuild the pieces of the objective with only the distillation term
    t = model(input_ids=b["input_ids"], output_hidden_states=True)
    rows = torch.arange(4)
    h_t = [h[rows, b["teacher_pos"]] for h in t.hidden_states]
    q, m = left_pad(b["question_ids"], b["question_len"])
    roll = latent_rollout(model, obj.projection, q, m, 2)
    s = continue_rollout(model, roll, b["answer_ids"], output_hidden_states=True)
    kd = codi_distill_loss([h[rows, b["answer_pos"]] for h in s.hidden_states], h_t)
    kd.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.projection.parameters())


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_both_architectures_train_and_parameters_change(tok, enc, arch, tmp_path):
    model = make_model("tiny", tok, arch=arch, seed=0)
    obj = CODIObjective.for_model(model, K=2)
    params = list(model.parameters()) + list(obj.parameters())
    before = [p.detach().clone() for p in params]
    res = train(model, enc, objective=obj, out_dir=tmp_path, save_model=False,
                cfg=TrainConfig(max_steps=3, batch_size=4, lr=1e-2, warmup_steps=1, progress=False, log_every=1))
    assert res["steps"] == 3 and np.isfinite(res["loss"])
    changed = [not torch.equal(a, p.detach()) for a, p in zip(before, params)]
    assert all(changed), f"{arch}: {sum(changed)}/{len(changed)} parameter tensors changed"
    # the checkpoint holds the projection
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert any(k.startswith("projection.") for k in ck["objective"])


def test_generation_batched_equals_single_and_save_load(tok, tmp_path):
    model = make_model("tiny", tok, seed=1)
    obj = CODIObjective.for_model(model, K=3)
    batched = codi_generate(model, obj.projection, tok, QUESTIONS, K=3, max_new_tokens=4, batch_size=3)
    single = [codi_generate(model, obj.projection, tok, [q], K=3, max_new_tokens=4)[0] for q in QUESTIONS]
    assert [b["text"] for b in batched] == [s["text"] for s in single]
    assert [b["prompt_index"] for b in batched] == list(range(len(QUESTIONS)))
    assert {b["finish_reason"] for b in batched} <= {"eos", "length"} and all(b["n_tokens"] <= 4 for b in batched)
    save_codi(tmp_path / "m", model, obj, tok)
    m2, t2, o2 = load_codi(tmp_path / "m")
    assert [r["text"] for r in codi_generate(m2, o2.projection, t2, QUESTIONS, K=3, max_new_tokens=4)] == [b["text"] for b in batched]
    with pytest.raises(FileNotFoundError, match="codi.json"): load_codi(tmp_path)


def test_evaluate_records_fit_metrics_and_probe(tok):
    from cotdistill.metrics import score_records, summarize
    from cotdistill.tasks import get_task
    task = get_task("arith")
    ds = task.splits(seed=0, n_train=10, n_validation=5, n_test=12, hard=False)
    tk = build_tokenizer(task.vocabulary_texts())
    model = make_model("tiny", tk, seed=0)
    obj = CODIObjective.for_model(model, K=2)
    recs, summ = evaluate_codi(model, obj.projection, tk, task, ds["test"], K=2, n=8, max_new_tokens=6)
    assert len(recs) == 8 and summ["n"] == 8 and summ["problems_per_s"] > 0 and 0 <= summ["accuracy"] <= 1
    for r in recs:
        assert r["rationale"] == "" and r["rationale_tokens"] == 0 and isinstance(r["correct"], bool) and r["seconds"] > 0
    m = summarize(score_records(recs, task, similarity=None), method="codi", n_boot=50)
    assert m["accuracy"] == summ["accuracy"] and m["rationale_tokens"] == 0 and m["validity"] is None
    probe = probe_thoughts(model, obj.projection, tk, [task.format_prompt(q) for q in ds["test"]["question"][:3]], K=2, topk=4)
    assert len(probe) == 6 and {p["thought"] for p in probe} == {1, 2}
    assert all(len(p["lm_head"]) == 4 and len(p["nearest_embedding"]) == 4 for p in probe)
    ps = [v for _, v in probe[0]["lm_head"]]
    assert ps == sorted(ps, reverse=True) and 0 < sum(ps) <= 1 + 1e-6


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_inference_path_equals_training_path(tok, enc, arch):
    model = make_model("tiny", tok, arch=arch, seed=0)
    prj = make_projection(32)
    b = _batch(tok, enc, range(5))
    q, m = left_pad(b["question_ids"], b["question_len"])
    train_roll = latent_rollout(model, prj, q, m, 3)
    with torch.no_grad(): inf_roll = latent_rollout(model, prj, q, m, 3)
    for x, y in zip(train_roll.states + train_roll.logits, inf_roll.states + inf_roll.logits):
        torch.testing.assert_close(x.detach(), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_training_path_is_padding_invariant_and_every_thought_gets_answer_gradient(tok, enc, arch):
    # the student task in training: a row's answer logits and distilled states must not depend on the other rows
    # (left padding of the question, attention mask and position ids across the thoughts), and the answer's
    # cross-entropy must reach every continuous thought through the KV cache (the paper backpropagates through them)
    model = make_model("tiny", tok, arch=arch, seed=0)
    prj = make_projection(32)
    idx = [0, 3, 5]   # questions of different lengths: rows 0 and 5 are left-padded
    b = _batch(tok, enc, idx)
    assert len(set(b["question_len"].tolist())) > 1
    zs = []
    class Rec(nn.Module):
        def forward(self, h):
            z = prj(h); z.retain_grad(); zs.append(z); return z
    q, m = left_pad(b["question_ids"], b["question_len"])
    roll = latent_rollout(model, Rec(), q, m, 3)
    out = continue_rollout(model, roll, b["answer_ids"], output_hidden_states=True)
    for r, i in enumerate(idx):
        one = _batch(tok, enc, [i])
        q1, m1 = left_pad(one["question_ids"], one["question_len"])
        o1 = continue_rollout(model, latent_rollout(model, prj, q1, m1, 3), one["answer_ids"], output_hidden_states=True)
        n = len(enc["answer_ids"][i])
        torch.testing.assert_close(out.logits[r, :n], o1.logits[0, :n], rtol=1e-4, atol=1e-4)
        p = enc["answer_pos"][i]
        for h, h1 in zip(out.hidden_states, o1.hidden_states): torch.testing.assert_close(h[r, p], h1[0, p], rtol=1e-4, atol=1e-4)
    from cotdistill.losses import token_cross_entropy
    token_cross_entropy(out.logits, b["answer_labels"]).backward()
    assert len(zs) == 3
    for k, z in enumerate(zs): assert z.grad is not None and z.grad.abs().sum() > 0, f"thought {k + 1} gets no gradient from the answer"


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_fast_inference_equals_model_forward(tok, arch):
    "codi_generate's FastDecoder path (02b) gives the answer logits and answers of the model's own forward."
    import cotdistill.evaluate as ev
    from cotdistill.codi import _fast_latent
    model = make_model("tiny", tok, arch=arch, seed=2).eval()
    obj = CODIObjective.for_model(model, K=3); obj.eval()
    bot, eot = tok.convert_tokens_to_ids("<bot>"), tok.convert_tokens_to_ids("<eot>")
    rows = [r + [bot] for r in tok(QUESTIONS)["input_ids"]]
    L = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (L - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (L - len(r)) + [1] * len(r) for r in rows])
    with torch.no_grad():
        roll = latent_rollout(model, obj.projection, ids, mask, K=3)
        slow = continue_rollout(model, roll, torch.full((len(rows), 1), eot), logits_to_keep=1).logits[:, -1]
        dec, nxt = _fast_latent(model, obj.projection, ids, mask, 3)
        fast = dec.step(torch.full((len(rows),), eot), nxt)
    assert (fast - slow).abs().max() < 1e-5
    with_fast = codi_generate(model, obj.projection, tok, QUESTIONS, K=3, max_new_tokens=4)
    ev.FAST_DECODE = False
    try: without = codi_generate(model, obj.projection, tok, QUESTIONS, K=3, max_new_tokens=4)
    finally: ev.FAST_DECODE = True
    assert [r["text"] for r in with_fast] == [r["text"] for r in without]
