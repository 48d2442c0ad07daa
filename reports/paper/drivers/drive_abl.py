"Ablations at k=3 from the same explicit-CoT model as drive.py's triple (same seed, sizes, one thread: the same model, checked by its test accuracy)"
import sys, json, time, dataclasses
import torch; torch.set_num_threads(1)
from cotdistill.progressive import mult_data, _pc, internalization_ablations, ABLATIONS, method_record, internalization_data, removal_schedule
from cotdistill.train import TrainConfig, train
from cotdistill.models import make_model
k, preset, cot_steps, sps, fin = 3, "small", 1500, 200, 300
out_p = f"/tmp/h9/out_abl_k{k}_{preset}.json"
def log(*a): print(time.strftime("%H:%M:%S"), *a, flush=True)
t0 = time.time()
d = mult_data(k, 40000, 200, 1000, "/work/shared/data/icot_mult", 0)
task, tok, rows = d["task"], d["tokenizer"], d["train"]
n_rat = max(internalization_data(tok, task, rows[:2000])["n_rationale"])
cfg = TrainConfig(batch_size=64, lr=3e-3, warmup_steps=100, log_every=50, ckpt_every=0, progress=False, seed=0)   # = mult_triple's
cot = make_model(preset, tok, arch="llama", seed=0)
r = train(cot, _pc(task, rows), cfg=dataclasses.replace(cfg, max_steps=cot_steps), tokenizer=tok, save_model=False)
rec, _ = method_record(cot, tok, task, d["test"], "mult_cot_sft_copy", r["seconds"], 0, max_new_tokens=n_rat + 2 * k + 8, n_boot=1000)
log("cot copy", rec["accuracy"], r["seconds"])
res = dict(cot_copy_accuracy=rec["accuracy"], cot_copy_seconds=r["seconds"], records=[], curve=[], ablation_wall_s={})
s3 = dict(remove_per_stage=4, steps_per_stage=sps, smoothing_lambda=4.0, reset_optimizer=True, gradual=True, final_steps=fin)
s3cfg = dataclasses.replace(cfg, lr=3e-4, warmup_steps=5)
S = len(removal_schedule(n_rat, 4))
sizes = dict(k=k, preset=preset, cot_steps=cot_steps, stage3_steps=S * sps + fin, n_train=40000, n_validation=200, n_test=len(d["test"]), batch_size=64,
             lr=3e-3, stage3_lr=3e-4, seed=0, max_rationale_tokens=n_rat, **s3)
for name, ch in ABLATIONS.items():
    t1 = time.time()
    rr, cc = internalization_ablations(cot, tok, task, rows, d["test"], s3cfg, {name: ch}, d["validation"], n_rat + 2 * k + 8, 1000,
                                       dict(k=k, preset=preset, test_source=d["test_source"], n_test=len(d["test"]), sizes=sizes, cot_steps=cot_steps), **s3)
    for x in rr: x["method"] = f"mult_internalized_{name}"; x["steps"] += cot_steps; x["seconds"] = round(x["seconds"] + r["seconds"], 1)
    res["records"] += rr; res["curve"] += cc; res["ablation_wall_s"][name] = round(time.time() - t1, 1)
    json.dump(res, open(out_p, "w"), indent=1, default=str); log(name, rr[0]["accuracy"], rr[0]["rationale_tokens"], "saved")
log("done", round(time.time() - t0))
