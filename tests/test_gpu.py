"""The kit's GPU path: the smoke profile on CUDA with bf16. Skipped on machines without a GPU (CI);
run on a GPU box with `pytest tests/test_gpu.py`."""
import math, os, subprocess, sys, json
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]
ROOT = Path(__file__).resolve().parent.parent


def test_train_and_generate_bf16_on_cuda(tmp_path):
    from cotdistill.evaluate import evaluate_model, generate_batched
    from cotdistill.models import build_tokenizer, make_model
    from cotdistill.tasks import get_task
    from cotdistill.train import TrainConfig, train
    task = get_task("arith")
    sp = task.splits(seed=0, n_train=512, n_validation=32, n_test=64, hard=False)
    tok = build_tokenizer(task.vocabulary_texts())
    model = make_model("student", tok, seed=0).to("cuda")
    rows = {"prompt": [task.format_prompt(q) for q in sp["train"]["question"]],
            "completion": [task.format_completion(r, a) for r, a in zip(sp["train"]["rationale"], sp["train"]["answer"])]}
    before = [p.detach().clone() for p in model.parameters()]
    res = train(model, rows, cfg=TrainConfig(max_steps=20, batch_size=64, mixed_precision="bf16", device="cuda", progress=False),
                out_dir=tmp_path / "run", tokenizer=tok)
    assert res["steps"] == 20 and math.isfinite(res["loss"])
    assert next(model.parameters()).device.type == "cuda"
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
    outs = generate_batched(model, tok, [task.format_prompt(q) for q in sp["test"]["question"][:16]], max_new_tokens=32)
    assert len(outs) == 16
    with torch.autocast("cuda", dtype=torch.bfloat16):
        recs, summary = evaluate_model(model, tok, task, sp["test"], max_new_tokens=64)
    assert summary["n"] == 64 and 0.0 <= summary["accuracy"] <= 1.0
    print(json.dumps({"tokens_per_s": res["tokens_per_s"], "eval_problems_per_s": summary["problems_per_s"],
                      "gpu": torch.cuda.get_device_name(0)}))


def test_smoke_reproduction_on_cuda(tmp_path):
    "The smoke profile end to end through papermill with the GPU visible."
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COTDISTILL_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "cotdistill.reproduce", "--profile", "smoke", "--out", str(tmp_path / "reports"), "--no-html"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    print(r.stdout[-3000:], r.stderr[-3000:])
    assert r.returncode == 0
    run = json.loads((tmp_path / "reports" / "smoke" / "run.json").read_text())
    assert run["environment"]["gpu"] and not run["failures"]
