"Driver of the paper grid at CPU size: python drive.py K PRESET COT_STEPS STEPS_PER_STAGE FINAL_STEPS ABL(0/1)"
import sys, os, json, time, dataclasses
import torch; torch.set_num_threads(1)
from cotdistill.progressive import mult_triple, internalization_ablations, ABLATIONS
from cotdistill.train import TrainConfig
k, preset, cot_steps, sps, fin, abl = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
out_p = f"/tmp/h9/out_k{k}_{preset}.json"
def log(*a): print(time.strftime("%H:%M:%S"), *a, flush=True)
t0 = time.time()
o = mult_triple(k=k, preset=preset, cot_steps=cot_steps, steps_per_stage=sps, final_steps=fin, remove_per_stage=int(os.environ.get("DELTA", 4)), n_train=int(os.environ.get("NTRAIN", 40000)),
                n_validation=200, n_test=int(os.environ.get("NTEST", 1000)), icot_dir="/work/shared/data/icot_mult", n_boot=1000, log=log)
res = dict(records=o["records"], curve=o["curve"], sizes=o["sizes"], test_source=o["test_source"], wall_s=round(time.time() - t0, 1))
json.dump(res, open(out_p, "w"), indent=1, default=str); log("saved", out_p)
if abl:
    d, s = o["data"], o["sizes"]
    cfg = TrainConfig(batch_size=s["batch_size"], lr=s["stage3_lr"], warmup_steps=5, log_every=50, ckpt_every=0, progress=False, seed=s["seed"])
    s3 = {a: s[a] for a in ("remove_per_stage", "steps_per_stage", "smoothing_lambda", "reset_optimizer", "gradual", "final_steps")}
    for name, ch in ABLATIONS.items():
        t1 = time.time()
        rr, cc = internalization_ablations(o["cot_model"], d["tokenizer"], d["task"], d["train"], d["test"], cfg, {name: ch}, d["validation"],
                                           s["max_rationale_tokens"] + 2 * k + 8, 1000, dict(k=k, preset=preset, test_source=d["test_source"], sizes=s, cot_steps=cot_steps), **s3)
        for r in rr: r["method"] = f"mult_internalized_{name}"; r["steps"] += cot_steps
        res["records"] += rr; res["curve"] += cc; res.setdefault("ablation_wall_s", {})[name] = round(time.time() - t1, 1)
        json.dump(res, open(out_p, "w"), indent=1, default=str); log(name, rr[0]["accuracy"], rr[0]["rationale_tokens"], "saved")
log("done", round(time.time() - t0))
