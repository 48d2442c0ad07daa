"""k=2: one explicit-CoT model (mult_triple's sizes), then stage 3 at the slow schedule (1 token per SPS steps, lr LR3, FIN final steps)
for the default and each ablation in ABLATIONS, every variant from the same CoT model; the JSON is rewritten after each variant.
Usage: drive_k2_grid.py COT_STEPS N_TRAIN SPS FIN LR3 TAG [SEED] (the seed initialises the models and orders the data; the problems are
always data seed 0's, so every seed answers the same 500 test problems)."""
import json, time, dataclasses, sys
import torch; torch.set_num_threads(1)
from cotdistill.progressive import mult_data, _pc, internalization_ablations, method_record, internalization_data, removal_schedule, ABLATIONS
from cotdistill.train import TrainConfig, train
from cotdistill.models import make_model
k, preset, cot_steps = 2, "small", int(sys.argv[1]); NTR, DEL, SPS, FIN, LR3, TAG = int(sys.argv[2]), 1, int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
seed = int(sys.argv[7]) if len(sys.argv) > 7 else 0
out_p = f"/tmp/h9/out_{TAG}_k{k}_small.json"
def log(*a): print(time.strftime("%H:%M:%S"), *a, flush=True)
t0 = time.time()
d = mult_data(k, NTR, 200, 500, "/work/shared/data/icot_mult", 0)
task, tok, rows = d["task"], d["tokenizer"], d["train"]
n_rat = max(internalization_data(tok, task, rows[:2000])["n_rationale"])
cfg = TrainConfig(batch_size=64, lr=3e-3, warmup_steps=100, log_every=50, ckpt_every=0, progress=False, seed=seed)   # = mult_triple's
cot = make_model(preset, tok, arch="llama", seed=seed)
r = train(cot, _pc(task, rows), cfg=dataclasses.replace(cfg, max_steps=cot_steps), tokenizer=tok, save_model=False)
rec, _ = method_record(cot, tok, task, d["test"], "mult_cot_sft", r["seconds"], seed, max_new_tokens=n_rat + 2 * k + 8, n_boot=1000,
                       extra=dict(k=k, preset=preset, steps=r["steps"], seconds=round(r["seconds"], 1)))
log("cot", rec["accuracy"], r["seconds"])
res = dict(cot_record=rec, records=[], curve=[])
json.dump(res, open(out_p, "w"), indent=1, default=str)
s3 = dict(remove_per_stage=DEL, steps_per_stage=SPS, smoothing_lambda=4.0, reset_optimizer=True, gradual=True, final_steps=FIN)
s3cfg = dataclasses.replace(cfg, lr=LR3, warmup_steps=5)
S = len(removal_schedule(n_rat, DEL))
sizes = dict(k=k, preset=preset, cot_steps=cot_steps, stage3_steps=S * SPS + FIN, n_train=NTR, n_validation=200, n_test=len(d["test"]), batch_size=64,
             lr=3e-3, stage3_lr=LR3, seed=seed, max_rationale_tokens=n_rat, **s3)
for name, change in {"default": {}, **ABLATIONS}.items():
    t1 = time.time()
    rr, cc = internalization_ablations(cot, tok, task, rows, d["test"], s3cfg, {name: change}, d["validation"], n_rat + 2 * k + 8, 1000,
                                       dict(k=k, preset=preset, test_source=d["test_source"], n_test=len(d["test"]), sizes=sizes, cot_steps=cot_steps), **s3)
    for x in rr: x["steps"] += cot_steps; x["seconds"] = round(x["seconds"] + r["seconds"], 1)
    res["records"] += rr; res["curve"] += cc; res[f"{name}_wall_s"] = round(time.time() - t1, 1)
    json.dump(res, open(out_p, "w"), indent=1, default=str); log(name, rr[0]["accuracy"], rr[0]["rationale_tokens"], "saved")
log("done", round(time.time() - t0))
