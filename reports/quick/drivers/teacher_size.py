"""Issue 9's fallback: the quick profile's stage-3 schedule on a teacher-size model (the committed offline teacher's weights,
first fine-tuned on the concise rationales as an explicit-CoT model), with its curve. As the 09 notebook's slow cell does."""
import json, time, dataclasses, torch
from pathlib import Path
import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
from cotdistill.core import profile_section, read_jsonl, set_threads
from cotdistill.models import load_model, count_params
from cotdistill.offline_teacher import ASSET_DIR, load_offline_teacher
from cotdistill.train import TrainConfig, train
from cotdistill.evaluate import make_eval_fn
from cotdistill.sft import load_method_outputs
from cotdistill.metrics import compare
from cotdistill.progressive import internalize, method_record, curriculum_curve, plot_curriculum
torch.set_num_threads(1)
R = Path("/work/main/reports/quick"); seed = 0
P, PT = profile_section("quick", "progressive"), profile_section("quick", "tasks")
teacher = load_offline_teacher(progress=False); task, tok = teacher.task, teacher.tokenizer
train_rows = read_jsonl(R / "datasets" / "concise.jsonl")
splits = task.splits(seed=seed, n_train=profile_section("quick", "dataset")["n_questions"], n_validation=PT["n_validation"], n_test=PT["n_test"], hard=False)
val_rows = splits["validation"].to_list()[:300]
cot = load_method_outputs(R, "cot_sft", model=False); test_rows, cot_records = cot["rows"], cot["records"]
t0 = time.time()
big = load_model(ASSET_DIR)
bcfg = TrainConfig(max_steps=300, batch_size=P["batch_size"], lr=P["stage3_lr"], warmup_steps=20, progress=False, seed=seed, log_every=50, ckpt_every=0)
train(big, {"prompt": [task.format_prompt(r["question"]) for r in train_rows],
            "completion": [task.format_completion(r["rationale"], r["answer"]) for r in train_rows]}, cfg=bcfg, tokenizer=tok, save_model=False, out_dir="/tmp/ts/cot")
t_cot = time.time() - t0
explicit, _ = method_record(big, tok, task, test_rows, "teacher_size_cot_sft", t_cot, seed, max_new_tokens=P["max_completion_length"], n_boot=2000)
print("explicit", explicit["accuracy"], round(t_cot), flush=True)
i_eval = make_eval_fn(tok, task, val_rows, max_new_tokens=P["max_completion_length"])
t1 = time.time()
hist = internalize(big, tok, task, train_rows, dataclasses.replace(bcfg, max_steps=None, warmup_steps=5, log_every=10), P["remove_per_stage"], P["steps_per_stage"],
                   P["smoothing_lambda"], P["reset_optimizer"], Path("/tmp/ts/stage3"), eval_fn=i_eval, gradual=P["gradual"], final_steps=P["final_steps"])
t3 = time.time() - t1
implicit, imp_records = method_record(big, tok, task, test_rows, "teacher_size_internalized", t_cot + t3, seed, rationale=False,
                                      max_new_tokens=P["max_completion_length"], n_boot=2000)
cmp = compare(imp_records, cot_records, names=("teacher_size_internalized", "cot_sft"), n_boot=2000, seed=seed)
print("internalized", implicit["accuracy"], round(t3), flush=True)
curve = curriculum_curve({}, hist)
plot_curriculum(curve, title=f"teacher-size model ({count_params(big):,} parameters), stage 3 only, quick schedule")
plt.savefig(R / "progressive_teacher_size_stage3.png", dpi=120)
out = dict(what="issue 9 fallback: the quick profile's stage-3 schedule (the same as the student's) on a teacher-size model",
           start="the committed offline teacher's weights, fine-tuned 300 steps on the 4,766 concise rationales (lr stage3_lr, batch 64)",
           schedule={k: P[k] for k in ("remove_per_stage", "steps_per_stage", "smoothing_lambda", "reset_optimizer", "gradual", "final_steps", "stage3_lr", "batch_size")},
           validation_problems=len(val_rows), test_problems=len(test_rows), n_params=count_params(big), threads=1,
           seconds=dict(cot=round(t_cot, 1), stage3=round(t3, 1)), records=[explicit, implicit], vs_cot_sft=cmp,
           curve=curve.to_dict(orient="records"), stages=hist, command="python /tmp/ts/teacher_size.py (copied to reports/quick/drivers/teacher_size.py)")
(R / "progressive_teacher_size.json").write_text(json.dumps(out, indent=1, default=str))
print("done", round(time.time() - t0))
