"k=3: a fresh explicit-CoT model (mult_triple's sizes), then stage 3 with 3x slower removal (Δ=2 per 300 steps: 150 steps per token)"
import json, time, dataclasses
import torch; torch.set_num_threads(1)
from cotdistill.progressive import mult_data, _pc, internalization_ablations, method_record, internalization_data, removal_schedule
from cotdistill.train import TrainConfig, train
from cotdistill.models import make_model
k, preset, cot_steps = 3, "small", 1500
out_p = "/tmp/h9/out_slow_k3_small.json"
def log(*a): print(time.strftime("%H:%M:%S"), *a, flush=True)
t0 = time.time()
d = mult_data(k, 40000, 200, 1000, "/work/shared/data/icot_mult", 0)
task, tok, rows = d["task"], d["tokenizer"], d["train"]
n_rat = max(internalization_data(tok, task, rows[:2000])["n_rationale"])
cfg = TrainConfig(batch_size=64, lr=3e-3, warmup_steps=100, log_every=50, ckpt_every=0, progress=False, seed=0)   # = mult_triple's
cot = make_model(preset, tok, arch="llama", seed=0)
r = train(cot, _pc(task, rows), cfg=dataclasses.replace(cfg, max_steps=cot_steps), tokenizer=tok, save_model=False)
rec, _ = method_record(cot, tok, task, d["test"], "mult_cot_sft_run3", r["seconds"], 0, max_new_tokens=n_rat + 2 * k + 8, n_boot=1000,
                       extra=dict(k=k, preset=preset, steps=r["steps"], seconds=round(r["seconds"], 1)))
log("cot run3", rec["accuracy"], r["seconds"])
res = dict(cot_record=rec, records=[], curve=[])
json.dump(res, open(out_p, "w"), indent=1, default=str)
s3 = dict(remove_per_stage=2, steps_per_stage=300, smoothing_lambda=4.0, reset_optimizer=True, gradual=True, final_steps=300)
s3cfg = dataclasses.replace(cfg, lr=3e-4, warmup_steps=5)
S = len(removal_schedule(n_rat, 2))
sizes = dict(k=k, preset=preset, cot_steps=cot_steps, stage3_steps=S * 300 + 300, n_train=40000, n_validation=200, n_test=len(d["test"]), batch_size=64,
             lr=3e-3, stage3_lr=3e-4, seed=0, max_rationale_tokens=n_rat, **s3)
t1 = time.time()
rr, cc = internalization_ablations(cot, tok, task, rows, d["test"], s3cfg, {"slow_removal": {}}, d["validation"], n_rat + 2 * k + 8, 1000,
                                   dict(k=k, preset=preset, test_source=d["test_source"], n_test=len(d["test"]), sizes=sizes, cot_steps=cot_steps), **s3)
for x in rr: x["method"] = "mult_internalized_slow_removal"; x["steps"] += cot_steps; x["seconds"] = round(x["seconds"] + r["seconds"], 1)
res["records"] += rr; res["curve"] += cc; res["stage3_wall_s"] = round(time.time() - t1, 1)
json.dump(res, open(out_p, "w"), indent=1, default=str); log("slow_removal", rr[0]["accuracy"], rr[0]["rationale_tokens"], "saved")
log("done", round(time.time() - t0))
