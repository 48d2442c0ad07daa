"answer-only baseline at k for a given number of steps (mult_triple's settings)"
import sys, json, time, dataclasses
import torch; torch.set_num_threads(1)
from cotdistill.progressive import mult_data, _pc, method_record
from cotdistill.train import TrainConfig, train
from cotdistill.models import make_model
k, steps, NTR, TAG = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
d = mult_data(k, NTR, 200, 500, "/work/shared/data/icot_mult", 0)
task, tok, rows = d["task"], d["tokenizer"], d["train"]
cfg = TrainConfig(batch_size=64, lr=3e-3, warmup_steps=100, log_every=50, ckpt_every=0, progress=False, seed=0, max_steps=steps)
m = make_model("small", tok, arch="llama", seed=0)
r = train(m, _pc(task, rows, rationale=False), cfg=cfg, tokenizer=tok, save_model=False)
rec, _ = method_record(m, tok, task, d["test"], f"mult_answer_only_{TAG}", r["seconds"], 0, rationale=False, max_new_tokens=2 * k + 4, n_boot=1000,
                       extra=dict(k=k, preset="small", steps=r["steps"], seconds=round(r["seconds"], 1), test_source=d["test_source"], n_test=len(d["test"]),
                                  sizes=dict(k=k, preset="small", steps=steps, n_train=NTR, lr=3e-3, batch_size=64, seed=0)))
json.dump(dict(records=[rec]), open(f"/tmp/h9/out_ans_{TAG}_k{k}.json", "w"), indent=1, default=str)
print(time.strftime("%H:%M:%S"), rec["method"], rec["accuracy"], rec["accuracy_ci"], r["seconds"], flush=True)
