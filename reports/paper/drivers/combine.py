"Collects the driver outputs into reports/paper/: progressive_paper_grid.json, progressive_removal_curves.csv, progressive_mult_curve.png"
import json
from pathlib import Path
import pandas as pd, matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
from cotdistill.progressive import plot_removal_curves
out = Path("/work/main/reports/paper"); out.mkdir(parents=True, exist_ok=True)
def ld(n): p = Path(f"/tmp/h9/{n}.json"); return json.load(open(p)) if p.exists() else None
keep = ("run", "method", "k", "preset", "accuracy", "accuracy_ci", "n_test", "test_source", "rationale_tokens", "problems_per_s", "steps", "seconds",
        "n_params", "start_cot_test_accuracy", "stage3", "sizes")
recs, curve, runs = [], [], {}
def add(run, src, records, crv, start_acc, desc, wall):
    runs[run] = dict(source=src, what=desc, wall_s=wall)
    for r in records:
        r = dict(r, run=run); r.setdefault("n_test", r.get("sizes", {}).get("n_test"))
        if r["method"].startswith("mult_internalized"): r["start_cot_test_accuracy"] = start_acc
        recs.append({k: r.get(k) for k in keep})
    curve.extend(dict(c, run=run) for c in crv)
A = ld("out_k3_small"); acc = {r["method"]: r for r in A["records"]}
for r in A["records"]:   # drive.py's ablations logged stage 3's seconds only: add the explicit-CoT model's, as mult_triple does
    if r["method"] in ("mult_internalized_no_smoothing", "mult_internalized_no_reset"): r["seconds"] = round(r["seconds"] + acc["mult_cot_sft"]["seconds"], 1)
add("k3_main", "drive.py 3 small 1500 200 300 1", A["records"], A["curve"], acc["mult_cot_sft"]["accuracy"],
    "mult_triple(k=3) + ablations from the same explicit-CoT model", dict(triple=A["wall_s"], **A.get("ablation_wall_s", {})))
K2 = ld("out_k2_small"); a2 = {r["method"]: r for r in K2["records"]}
add("k2_main", "DELTA=2 NTRAIN=3000 NTEST=500 drive.py 2 small 800 300 400 0", K2["records"], K2["curve"], a2["mult_cot_sft"]["accuracy"],
    "mult_triple(k=2)", dict(triple=K2["wall_s"]))
B = ld("out_abl_k3_small")
if B: add("k3_second_cot", "drive_abl.py", B["records"], B["curve"], B["cot_copy_accuracy"],
          f"a second explicit-CoT model with the same seed and sizes (test accuracy {B['cot_copy_accuracy']}: CPU training is not bit-reproducible), "
          "then the two ablations from it", B.get("ablation_wall_s"))
for tag, f, src in (("k3_slow_removal", "out_slow_k3_small", "drive_slow.py"), ("k2_slow_lr1e-3", "out_slow_lr1e-3_k2_small", "drive_var.py 2 800 3000 1 300 400 1e-3 slow_lr1e-3"),
                    ("k2_slower_lr1e-3", "out_slower_lr1e-3_k2_small", "drive_var.py 2 800 3000 1 1000 1000 1e-3 slower_lr1e-3")):
    C = ld(f)
    if C and C["records"]:
        add(tag, src, [dict(C["cot_record"], method=C["cot_record"]["method"])] + C["records"], C["curve"], C["cot_record"]["accuracy"],
            "a fresh explicit-CoT model, then stage 3 with the schedule in 'stage3'", dict(stage3=C.get("stage3_wall_s")))
Z = ld("out_ans_9800steps_k2")
if Z: add("k2_answer_only_9800", "drive_ans.py 2 9800 3000 9800steps", Z["records"], [], None, "answer-only at k=2 with 9,800 steps (= 800 + stage 3 of k2_slower_lr1e-3)", None)
grid = dict(note="Reduced (CPU) size, NOT the paper profile's sizes: see README.md. One seed (0), 'small' preset (0.34M parameters), one torch thread "
                 "on a 2-core CPU shared with other jobs; 'seconds' are training seconds under that load (internalized: explicit CoT + stage 3).",
            runs=runs, records=recs, removal_curves=curve)
(out / "progressive_paper_grid.json").write_text(json.dumps(grid, indent=1, default=str))
pd.DataFrame(curve).to_csv(out / "progressive_removal_curves.csv", index=False)
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for ax, run, k in ((axes[0], "k2_main", 2), (axes[1], "k3_main", 3)):
    m = {r["method"]: r for r in recs if r["run"] == run}
    plot_removal_curves([c for c in curve if c["run"] == run], m["mult_cot_sft"]["accuracy"], m["mult_answer_only"]["accuracy"], ax=ax,
                        title=f"{k} x {k} multiplication, 'small' (0.34M), CPU size")
    for j, (tag, lab) in enumerate((("k3_slow_removal", "stage 3: Δ=2 per 300 steps (another CoT run)"), ("k2_slow_lr1e-3", "stage 3: 1 token per 300 steps, lr 1e-3 (another CoT run)"),
                                    ("k2_slower_lr1e-3", "stage 3: 1 token per 1,000 steps, lr 1e-3 (another CoT run)"))):
        cs = [c for c in curve if c["run"] == tag]
        if cs and tag.startswith(f"k{k}"):
            ax.plot([c["removed"] for c in cs], [c["accuracy"] for c in cs], "s--", c=f"C{5 + j}", label=lab); ax.legend(fontsize=7)
plt.tight_layout(); plt.savefig(out / "progressive_mult_curve.png", dpi=120)
df = pd.DataFrame(recs)
print(df[["run", "method", "accuracy", "accuracy_ci", "rationale_tokens", "problems_per_s", "steps", "seconds", "start_cot_test_accuracy"]].to_string())
print(pd.DataFrame(curve)[["run", "variant", "stage", "removed", "steps", "accuracy", "rationale_tokens"]].to_string())
print(json.dumps(runs, indent=1))
