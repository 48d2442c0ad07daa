"""The engine's promises that need processes or files: tokenizer/model round trips offline, a run killed
(exception or SIGKILL) and resumed ends with the same weights, two processes under `accelerate launch`
match one process, batched generation and evaluation behave."""
import json, os, shutil, signal, subprocess, sys, textwrap, time
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import numpy as np
import torch

torch.set_num_threads(1)
from cotdistill.core import read_jsonl
from cotdistill.models import MODEL_PRESETS, build_tokenizer, count_params, load_model, load_tokenizer, make_model
from cotdistill.train import TrainConfig, encode_sft, epoch_batches, lm_objective, pad_collate, train
from cotdistill.evaluate import evaluate_model, generate_batched

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [f"Question: Alice has {a} apples. She buys {b} more.\nAnswer:" for a in range(1, 13) for b in range(1, 6)]
COMPLETIONS = [f" {a} + {b} = {a + b} #### {a + b}" for a in range(1, 13) for b in range(1, 6)]


class ToyTask:
    "A stand-in task: the sums above."
    def format_prompt(self, q): return q
    def parse_completion(self, text):
        if "####" not in text: return text.strip(), None
        r, a = text.rsplit("####", 1)
        return r.strip(), (a.split() or [None])[0]


@pytest.fixture(scope="module")
def tok(): return build_tokenizer(PROMPTS + COMPLETIONS)


def _same(a: dict, b: dict) -> bool: return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- tokenizer and models
def test_tokenizer_roundtrip_and_digits(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    t2 = load_tokenizer(tmp_path)
    assert t2.get_vocab() == tok.get_vocab() and t2.padding_side == "left"
    for s in [" 12 + 3 = 15 #### 15", " 1 2 3", "123", "Alice has 7 apples."]:
        assert t2.decode(t2(s).input_ids, skip_special_tokens=True) == s
    assert t2.convert_ids_to_tokens(t2(" 123").input_ids) == ["<s>", " 1", "2", "3"]
    for t in ["<bot>", "<eot>", "<mask>", "<sep>", "<extra_15>"]:
        assert len(t2(t, add_special_tokens=False).input_ids) == 1   # reserved tokens are never split
    assert build_tokenizer(PROMPTS[::-1] + COMPLETIONS).get_vocab() == tok.get_vocab()   # deterministic ids
    t3 = build_tokenizer(["a b"], extra_tokens=["<think>"])
    assert t3.convert_tokens_to_ids("<think>") == 24 and len(t3("<think>", add_special_tokens=False).input_ids) == 1


def test_presets_and_offline_load(tok, tmp_path):
    n = {p: count_params(make_model(p, tok)) for p in MODEL_PRESETS}
    assert n["student"] * 10 <= n["teacher"] and n["tiny"] < n["student"]
    for arch in ("llama", "gpt2"):
        m = make_model("tiny", tok, arch=arch, seed=3)
        m.save_pretrained(tmp_path / arch); tok.save_pretrained(tmp_path / arch)
        m2 = load_model(tmp_path / arch)
        assert type(m2) is type(m) and _same(m.state_dict(), m2.state_dict())
        assert next(load_model(str(tmp_path / arch), dtype="bfloat16").parameters()).dtype == torch.bfloat16
    with pytest.raises(FileNotFoundError, match="does not exist"): load_model(tmp_path / "missing")
    with pytest.raises(ValueError, match="dtype"): load_model(tmp_path / "llama", dtype="float99")
    with pytest.raises(OSError): load_model("no-such-org/no-such-model")   # offline: a clear hub error, not a hang


# ---------------------------------------------------------------- data
def test_encode_and_batches(tok):
    enc = encode_sft(tok, PROMPTS[:3], COMPLETIONS[:3])
    for x, y, p in zip(enc["input_ids"], enc["labels"], PROMPTS):
        n = len(tok(p).input_ids)
        assert y[:n] == [-100] * n and y[n:] == x[n:] and x[-1] == tok.eos_token_id
    with pytest.warns(UserWarning, match="max_len"): encode_sft(tok, PROMPTS[:2], COMPLETIONS[:2], max_len=5)
    rows = {"input_ids": [np.array(x) for x in enc["input_ids"]], "labels": [np.array(y) for y in enc["labels"]], "k": [1, 2, 3]}
    b = pad_collate(rows, [0, 2], pad_id=0)
    assert b["input_ids"].shape == b["labels"].shape and b["k"].tolist() == [1, 3]
    lengths = np.random.default_rng(0).integers(20, 100, 4000)
    bb = epoch_batches(lengths, 64, 0, 0)
    waste = 1 - lengths[bb].sum() / (lengths[bb].max(1) * 64).sum()
    rnd = epoch_batches(lengths, 64, 0, 0, mega=1)
    assert waste < 0.05 and waste < (1 - lengths[rnd].sum() / (lengths[rnd].max(1) * 64).sum()) / 5, waste


def test_bad_input(tok, tmp_path):
    m = make_model("tiny", tok)
    with pytest.raises(ValueError, match="columns"): train(m, {"question": ["a"] * 20}, cfg=TrainConfig(max_steps=1, batch_size=4))
    with pytest.raises(ValueError, match="divisible"):
        train(m, {"prompt": PROMPTS, "completion": COMPLETIONS}, tokenizer=tok, cfg=TrainConfig(max_steps=1, batch_size=6, grad_accum=4))
    with pytest.raises(ValueError, match="fewer than batch_size"):
        train(m, {"prompt": PROMPTS[:3], "completion": COMPLETIONS[:3]}, tokenizer=tok, cfg=TrainConfig(max_steps=1, batch_size=8))
    with pytest.raises(ValueError, match="mixed_precision"):
        train(m, {"prompt": PROMPTS, "completion": COMPLETIONS}, tokenizer=tok, cfg=TrainConfig(max_steps=1, batch_size=8, mixed_precision="fp8"))


# ---------------------------------------------------------------- the loop
CFG = dict(max_steps=12, batch_size=8, lr=1e-2, warmup_steps=3, ckpt_every=4, log_every=2, progress=False)


class Dies:
    "lm_objective with a schedule hook that raises at one step (a crash mid-run)."
    def __init__(self, at=None): self.at, self.seen = at, []
    def on_step(self, step):
        self.seen.append(step)
        if step == self.at: raise KeyboardInterrupt
    def __call__(self, model, batch): return lm_objective(model, batch)


def test_resume_after_crash_same_weights(tok, tmp_path):
    data = {"prompt": PROMPTS, "completion": COMPLETIONS}
    ref = make_model("tiny", tok, seed=1)
    r = train(ref, data, Dies(), TrainConfig(**CFG), tmp_path / "a", tokenizer=tok)
    assert r["steps"] == 12 and r["stopped"] == "done"
    m = make_model("tiny", tok, seed=1)
    with pytest.raises(KeyboardInterrupt): train(m, data, Dies(at=6), TrainConfig(**CFG), tmp_path / "b", tokenizer=tok)
    m2, obj = make_model("tiny", tok, seed=1), Dies()
    r2 = train(m2, data, obj, TrainConfig(**CFG), tmp_path / "b", tokenizer=tok)
    assert obj.seen[0] == 4 and r2["steps"] == 12              # resumed from the step-4 checkpoint
    assert _same(ref.state_dict(), m2.state_dict())            # bit-identical to the uninterrupted run
    steps = [x["step"] for x in read_jsonl(tmp_path / "b" / "metrics.jsonl") if "loss" in x]
    assert steps == [x["step"] for x in read_jsonl(tmp_path / "a" / "metrics.jsonl") if "loss" in x] == list(range(2, 13, 2))
    assert (tmp_path / "b" / "model" / "config.json").exists()


def test_objective_with_parameters_and_grad_accum(tok, tmp_path):
    "Extra trainable parameters of an objective are optimised and checkpointed; grad_accum gives the same result."
    class Head(torch.nn.Module):
        def __init__(self): super().__init__(); self.scale = torch.nn.Parameter(torch.ones(1))
        def forward(self, model, batch):
            loss, _ = lm_objective(model, batch)
            return loss * self.scale, {"scale": self.scale.detach()}
    data = {"prompt": PROMPTS, "completion": COMPLETIONS}
    outs = []
    for ga in (1, 2, 4):
        m, h = make_model("tiny", tok, seed=2), Head()
        train(m, data, h, TrainConfig(**{**CFG, "max_steps": 4, "grad_accum": ga}), tmp_path / f"ga{ga}", tokenizer=tok)
        outs.append((m.state_dict(), h.scale.detach().clone()))
    assert outs[0][1].item() != 1.0
    for sd, s in outs[1:]:
        assert max((sd[k] - outs[0][0][k]).abs().max().item() for k in sd) < 1e-5 and torch.allclose(s, outs[0][1], atol=1e-6)


def test_time_budget_and_eval(tok, tmp_path):
    calls = []
    def eval_fn(model): calls.append(model.training); return {"acc": 0.5}
    m = make_model("tiny", tok)
    r = train(m, {"prompt": PROMPTS, "completion": COMPLETIONS}, cfg=TrainConfig(**{**CFG, "max_steps": 10_000, "time_budget_s": 1.0, "eval_every": 5}),
              out_dir=tmp_path, eval_fn=eval_fn, tokenizer=tok)
    assert r["stopped"] == "time_budget" and r["steps"] < 10_000 and r["model_dir"] is None and calls and not any(calls)
    ev = [x for x in read_jsonl(tmp_path / "metrics.jsonl") if "eval_acc" in x]
    assert ev and ev[-1]["step"] == r["steps"]
    assert m.training


SCRIPT = """
import os, sys, json, signal
os.environ["HF_HUB_OFFLINE"] = "1"
import torch; torch.set_num_threads(1)
from cotdistill.models import build_tokenizer, make_model
from cotdistill.train import TrainConfig, train, lm_objective
out, kill_at, steps, bs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
P = [f"Question: Alice has {a} apples. She buys {b} more.\\nAnswer:" for a in range(1, 13) for b in range(1, 6)]
C = [f" {a} + {b} = {a + b} #### {a + b}" for a in range(1, 13) for b in range(1, 6)]
tok = build_tokenizer(P + C)
class Obj:
    def on_step(self, step):
        if step == kill_at: os.kill(os.getpid(), signal.SIGKILL)
    def __call__(self, model, batch): return lm_objective(model, batch)
m = make_model("tiny", tok, seed=0)
r = train(m, {"prompt": P, "completion": C}, Obj(), TrainConfig(max_steps=steps, batch_size=bs, lr=1e-2, warmup_steps=2, ckpt_every=3,
          log_every=1, clip=0.5, progress=False), out, tokenizer=tok, save_model=False)
if int(os.environ.get("RANK", "0")) == 0:
    torch.save(m.state_dict(), os.path.join(out, "final.pt")); print("DONE", r["steps"], flush=True)
"""


def _run(args, env=None, check=True):
    p = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=ROOT, timeout=300)
    if check and p.returncode != 0: raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    return p


def test_sigkill_and_resume_same_weights(tmp_path):
    script = tmp_path / "run.py"; script.write_text(SCRIPT)
    _run([PY, str(script), str(tmp_path / "ref"), "-1", "10", "8"])
    p = _run([PY, str(script), str(tmp_path / "kill"), "7", "10", "8"], check=False)
    assert p.returncode == -signal.SIGKILL and not (tmp_path / "kill" / "final.pt").exists()
    assert torch.load(tmp_path / "kill" / "checkpoint.pt", weights_only=False)["step"] == 6
    _run([PY, str(script), str(tmp_path / "kill"), "-1", "10", "8"])
    a, b = torch.load(tmp_path / "ref" / "final.pt"), torch.load(tmp_path / "kill" / "final.pt")
    assert _same(a, b)
    assert [x["step"] for x in read_jsonl(tmp_path / "kill" / "metrics.jsonl")] == list(range(1, 11))


def test_two_processes_match_one(tmp_path):
    "accelerate launch --cpu --num_processes 2: after 5 steps within 1e-4 (max abs) of one process, same global batch. ~1 min."
    script = tmp_path / "run.py"; script.write_text(SCRIPT)
    _run([PY, str(script), str(tmp_path / "one"), "-1", "5", "8"])
    accel = str(Path(PY).parent / "accelerate")
    _run([accel, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
          "--main_process_port", "29517", str(script), str(tmp_path / "two"), "-1", "5", "8"], env={"OMP_NUM_THREADS": "1"})
    a, b = torch.load(tmp_path / "one" / "final.pt"), torch.load(tmp_path / "two" / "final.pt")
    start = make_model("tiny", build_tokenizer(PROMPTS + COMPLETIONS), seed=0).state_dict()
    assert max((a[k] - start[k]).abs().max().item() for k in a) > 1e-3          # the weights did move
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff < 1e-4, diff
    la, lb = ([r["loss"] for r in read_jsonl(tmp_path / d / "metrics.jsonl")] for d in ("one", "two"))
    assert len(la) == len(lb) == 5 and max(abs(x - y) for x, y in zip(la, lb)) < 1e-5   # logged losses are global means


# ---------------------------------------------------------------- generation and evaluation
@pytest.fixture(scope="module")
def trained(tok, tmp_path_factory):
    m = make_model("tiny", tok, seed=0)
    train(m, {"prompt": PROMPTS, "completion": COMPLETIONS}, cfg=TrainConfig(max_steps=80, batch_size=16, lr=1e-2, warmup_steps=5, progress=False),
          out_dir=tmp_path_factory.mktemp("trained"), tokenizer=tok, save_model=False)
    return m


def test_generate_batched(trained, tok):
    g = generate_batched(trained, tok, PROMPTS[:10], max_new_tokens=16, batch_size=4)
    assert [x["prompt_index"] for x in g] == list(range(10)) and all(x["finish_reason"] == "eos" for x in g)
    b = tok(PROMPTS[:10], padding=True, return_tensors="pt")
    hf = trained.generate(**b, max_new_tokens=16, do_sample=False)
    assert [x["text"] for x in g] == [tok.decode(r[b.input_ids.shape[1]:], skip_special_tokens=True) for r in hf]
    s = [generate_batched(trained, tok, PROMPTS[:5], max_new_tokens=16, temperature=1.5, n=4, seed=s, top_p=0.9) for s in (1, 1, 2)]
    assert [x["text"] for x in s[0]] == [x["text"] for x in s[1]] != [x["text"] for x in s[2]]
    assert [(x["prompt_index"], x["sample_index"]) for x in s[0]] == [(i, j) for i in range(5) for j in range(4)]
    short = generate_batched(trained, tok, PROMPTS[:3], max_new_tokens=3)
    assert all(x["finish_reason"] == "length" and x["n_tokens"] == 3 for x in short)
    with pytest.raises(ValueError, match="top_p"): generate_batched(trained, tok, PROMPTS[:1], top_p=0)


def test_evaluate_model(trained, tok):
    rows = [{"question": p, "answer": str(a + b)} for p, (a, b) in zip(PROMPTS, [(a, b) for a in range(1, 13) for b in range(1, 6)])]
    recs, summ = evaluate_model(trained, tok, ToyTask(), rows, n=20, max_new_tokens=16, match_fn=lambda p, g: p == g)
    assert summ["n"] == 20 and summ["problems_per_s"] > 0
    assert all(r["correct"] == (r["pred_answer"] == r["gold"]) for r in recs)
    assert summ["accuracy"] == sum(r["correct"] for r in recs) / 20
    assert {"prediction", "pred_answer", "correct", "rationale", "rationale_tokens", "seconds"} <= set(recs[0])
    with pytest.raises(ValueError, match="answer"): evaluate_model(trained, tok, ToyTask(), [{"question": "x"}], match_fn=lambda p, g: p == g)
