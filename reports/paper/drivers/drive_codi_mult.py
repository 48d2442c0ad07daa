"""CODI on k x k multiplication (k=2): a fresh explicit-CoT model with the issue-9 grid's sizes (small preset, 800 steps, 3,000 problems),
then codi_ablation_grid from it, one variant at a time (the JSON is rewritten after each), on the same 500 test problems as the k=2
progressive runs; at the end the paired comparisons against the default."""
import copy, dataclasses, json, sys, time
import torch; torch.set_num_threads(1)
from cotdistill.codi import CODI_ABLATIONS, codi_ablation_grid, encode_codi
from cotdistill.metrics import compare
from cotdistill.models import make_model
from cotdistill.progressive import _pc, method_record, mult_data
from cotdistill.train import TrainConfig, train
k, steps, lr, TAG = 2, int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
out_p = f"/tmp/h10/codi_mult_{TAG}.json"
def log(*a): print(time.strftime("%H:%M:%S"), *a, flush=True)
d = mult_data(k, 3000, 200, 500, "/work/shared/data/icot_mult", 0)
task, tok, rows = d["task"], d["tokenizer"], d["train"]
cfg = TrainConfig(batch_size=64, lr=3e-3, warmup_steps=100, log_every=50, ckpt_every=0, progress=False, seed=0, max_steps=800)
cot = make_model("small", tok, arch="llama", seed=0)
r = train(cot, _pc(task, rows), cfg=cfg, tokenizer=tok, save_model=False)
rec, _ = method_record(cot, tok, task, d["test"], "mult_cot_sft", r["seconds"], 0, max_new_tokens=30, n_boot=1000,
                       extra=dict(k=k, preset="small", steps=r["steps"], seconds=round(r["seconds"], 1)))
log("cot", rec["accuracy"], round(r["seconds"]))
pc = _pc(task, rows)
enc = encode_codi(tok, pc["prompt"], pc["completion"])
res = dict(kind="codi_mult", k=k, steps=steps, lr=lr, batch_size=64, seed=0, n_train=len(rows), n_test=len(d["test"]), test_source=d["test_source"],
           start=dict(preset="small", arch="llama", steps=800, lr=3e-3, n_params=sum(p.numel() for p in cot.parameters())), cot_record=rec, records=[])
per = {}
for name, change in CODI_ABLATIONS.items():
    recs, pp = codi_ablation_grid(lambda: copy.deepcopy(cot), tok, task, enc, d["test"], variants={name: change}, steps=steps, lr=lr,
                                  batch_size=64, seed=0, eval_every=max(1, steps // 5), teacher_max_new_tokens=30, speed_reps=1,
                                  out_dir=f"/tmp/h10/runs_{TAG}", log=log)
    res["records"] += recs; per[name] = pp[name]
    json.dump(res, open(out_p, "w"), indent=1, default=str)
for rec in res["records"]:
    if rec["variant"] == "default": continue
    c = compare(per[rec["variant"]], per["default"], names=(rec["variant"], "default"), n_boot=1000, seed=0)
    rec.update(diff_vs_default=c["diff"], diff_ci_vs_default=c["diff_ci"], p_mcnemar_vs_default=c["p_mcnemar"])
json.dump(res, open(out_p, "w"), indent=1, default=str); log("done")
