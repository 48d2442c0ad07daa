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
G = ld("out_k2grid_k2_small")   # drive_k2_grid.py: one CoT model, then the default and both ablations at the slow schedule
if G and G["records"]:
    for r in G["records"]: r["method"] = "mult_internalized" if r["method"] == "default" else f"mult_internalized_{r['method']}"
    add("k2_slow_grid", "drive_k2_grid.py 800 3000 1000 5000 1e-3 k2grid", [G["cot_record"]] + G["records"], G["curve"], G["cot_record"]["accuracy"],
        "a fresh explicit-CoT model, then stage 3 at 1 token per 1,000 steps (lr 1e-3, 5,000 final steps) for the default and each ablation",
        {k[:-7]: v for k, v in G.items() if k.endswith("_wall_s")})
G1 = ld("out_k2grid_s1_k2_small")   # the same grid, seed 1 (its own CoT model)
if G1 and G1["records"]:
    for r in G1["records"]: r["method"] = "mult_internalized" if r["method"] == "default" else f"mult_internalized_{r['method']}"
    add("k2_slow_grid_seed1", "drive_k2_grid.py 800 3000 1000 5000 1e-3 k2grid_s1 1", [G1["cot_record"]] + G1["records"], G1["curve"],
        G1["cot_record"]["accuracy"], "k2_slow_grid with seed 1 (models and data order; the same problems)", {k[:-7]: v for k, v in G1.items() if k.endswith("_wall_s")})
G2 = ld("out_k2grid_s1_cot1600_k2_small")   # seed 1 from a longer explicit-CoT run; stopped after the default (the ablations not run)
if G2 and G2["records"]:
    for r in G2["records"]: r["method"] = "mult_internalized"
    add("k2_slow_seed1_cot1600", "drive_k2_grid.py 1600 3000 1000 5000 1e-3 k2grid_s1_cot1600 1 (stopped after the default)", [G2["cot_record"]] + G2["records"],
        G2["curve"], G2["cot_record"]["accuracy"], "seed 1 with 1,600 explicit-CoT steps, then the default stage 3 only", {k[:-7]: v for k, v in G2.items() if k.endswith("_wall_s")})
for sd in (2, 3):   # more seeds of the default only (each stopped after its default)
    Gs = ld(f"out_k2grid_s{sd}_k2_small")
    if Gs and Gs["records"]:
        Gs["records"] = [r for r in Gs["records"] if r["method"] == "default"]
        for r in Gs["records"]: r["method"] = "mult_internalized"
        add(f"k2_slow_seed{sd}", f"drive_k2_grid.py 800 3000 1000 5000 1e-3 k2grid_s{sd} {sd} (stopped after the default)", [Gs["cot_record"]] + Gs["records"],
            [c for c in Gs["curve"] if c["variant"] == "default"], Gs["cot_record"]["accuracy"], f"seed {sd}: the default stage 3 only",
            {k[:-7]: v for k, v in Gs.items() if k.endswith("_wall_s")})
Z2 = ld("out_ans_13800steps_k2")
if Z2: add("k2_answer_only_13800", "drive_ans.py 2 13800 3000 13800steps", Z2["records"], [], None, "answer-only at k=2 with 13,800 steps (= 800 + stage 3 of k2_slow_grid)", None)
C3 = ld("out_k3_slower_k3_small")
if C3 and C3["records"]:
    add("k3_slower_lr1e-3", "drive_var.py 3 1500 40000 1 1000 3000 1e-3 k3_slower", [dict(C3["cot_record"], method="mult_cot_sft")] + C3["records"], C3["curve"],
        C3["cot_record"]["accuracy"], "a fresh explicit-CoT model, then stage 3 at 1 token per 1,000 steps (lr 1e-3, 3,000 final steps)", dict(stage3=C3.get("stage3_wall_s")))
grid = dict(note="Reduced (CPU) size, NOT the paper profile's sizes: see README.md. One seed (0), 'small' preset (0.34M parameters), one torch thread "
                 "on a 2-core CPU shared with other jobs; 'seconds' are training seconds under that load (internalized: explicit CoT + stage 3).",
            runs=runs, records=recs, removal_curves=curve)
(out / "progressive_paper_grid.json").write_text(json.dumps(grid, indent=1, default=str))
pd.DataFrame(curve).to_csv(out / "progressive_removal_curves.csv", index=False)
fig, axes = plt.subplots(1, 2, figsize=(13, 4.4))
by = lambda run: {r["method"]: r for r in recs if r["run"] == run}
if G and G["records"]:   # 2 x 2: the slow schedule with its two ablations; the fast schedule and the earlier slow run as dashed lines
    ao = by("k2_answer_only_13800").get("mult_answer_only_13800steps", by("k2_answer_only_9800").get("mult_answer_only_9800steps", {})).get("accuracy")
    plot_removal_curves([c for c in curve if c["run"] == "k2_slow_grid"], G["cot_record"]["accuracy"], ao, ax=axes[0],
                        title="2 x 2 multiplication, 'small' (0.34M): 1 token per 1,000 steps")
    for j, (tag, lab) in enumerate((("k2_main", "Δ=2 per 300 steps, lr 3e-4 (another CoT run)"), ("k2_slower_lr1e-3", "1 token per 1,000 steps, 1,000 final (another CoT run)"))):
        cs = [c for c in curve if c["run"] == tag and c["variant"] in ("default", "slower_lr1e-3") and c["stage"] > 0]
        axes[0].plot([c["removed"] for c in cs], [c["accuracy"] for c in cs], "s--", c=f"C{5 + j}", alpha=0.6, label=lab)
    for j, v in enumerate(("default", "no_smoothing", "no_reset")):
        cs = [c for c in curve if c["run"] == "k2_slow_grid_seed1" and c["variant"] == v]
        if cs: axes[0].plot([c["removed"] for c in cs], [c["accuracy"] for c in cs], "^:", c=f"C{j}", alpha=0.7, label=f"stage 3: {v}, seed 1")
    for sd, mk in ((2, "x"), (3, "+")):
        cs = [c for c in curve if c["run"] == f"k2_slow_seed{sd}"]
        if cs: axes[0].plot([c["removed"] for c in cs], [c["accuracy"] for c in cs], f"{mk}:", c="C0", alpha=0.7, label=f"stage 3: default, seed {sd}")
    cs = [c for c in curve if c["run"] == "k2_slow_seed1_cot1600"]
    if cs: axes[0].plot([c["removed"] for c in cs], [c["accuracy"] for c in cs], "v:", c="C3", alpha=0.7, label="stage 3: default, seed 1, 1,600 CoT steps")
    axes[0].legend(fontsize=6, ncol=2)
m3 = by("k3_main")
plot_removal_curves([c for c in curve if c["run"] == "k3_main"], m3["mult_cot_sft"]["accuracy"], m3["mult_answer_only"]["accuracy"], ax=axes[1],
                    title="3 x 3 multiplication, 'small' (0.34M)")
for j, (tag, lab) in enumerate((("k3_slow_removal", "Δ=2 per 300 steps (another CoT run)"), ("k3_slower_lr1e-3", "1 token per 1,000 steps, lr 1e-3 (another CoT run)"))):
    cs = [c for c in curve if c["run"] == tag and c["stage"] > 0]
    if cs: axes[1].plot([c["removed"] for c in cs], [c["accuracy"] for c in cs], "s--", c=f"C{5 + j}", label=lab)
axes[1].legend(fontsize=7)
plt.tight_layout(); plt.savefig(out / "progressive_mult_curve.png", dpi=120)
df = pd.DataFrame(recs)
print(df[["run", "method", "accuracy", "accuracy_ci", "rationale_tokens", "problems_per_s", "steps", "seconds", "start_cot_test_accuracy"]].to_string())
print(pd.DataFrame(curve)[["run", "variant", "stage", "removed", "steps", "accuracy", "rationale_tokens"]].to_string())
print(json.dumps(runs, indent=1))
