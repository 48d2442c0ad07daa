"Collects CODI's multiplication grid into reports/paper/codi_mult.json (one entry per seed under 'runs') and codi_mult.png."
import json
from pathlib import Path
import matplotlib; matplotlib.use("Agg")
from cotdistill.codi import plot_codi_ablations
out = Path("/work/main/reports/paper")
s0 = json.load(open("/tmp/h10/codi_mult_s3000.json"))      # drive_codi_mult.py 3000 1e-3 s3000 (seed 0; no answer-only model in that run)
s0.update(n_eval=s0.pop("n_test"), source="drive_codi_mult.py 3000 1e-3 s3000",
          reference=dict(start="mult_cot_sft", cot_sft_accuracy=s0["cot_record"]["accuracy"], answer_only_accuracy=None,
                         answer_only_note="not trained in this run; answer-only models of seed 0 on the same data and test problems "
                                          "(the progressive runs in progressive_paper_grid.json): 0.122 (2,400 steps), 0.118 (9,800), 0.138 (13,800)"))
runs = [s0]
p1 = Path("/tmp/h10/codi_mult_seed1.json")
if p1.exists():
    s1 = json.load(open(p1)); s1["source"] = "codi_mult_grid(k=2, seed=1, eval_every=600, icot_dir='../shared/data/icot_mult') (the kit's function; 2x2 has no icot file)"
    runs = [s1, s0]                                           # the run with its own answer-only floor first: plot_codi_ablations draws its line
grid = dict(kind="codi_mult", note="Reduced (CPU) size, NOT the paper profile's run: one torch thread on a shared 2-core CPU; see README.md.",
            runs=runs)
(out / "codi_mult.json").write_text(json.dumps(grid, indent=1, default=str))
fig = plot_codi_ablations(grid, out / "codi_mult.png")
fig.suptitle("CODI on 2 x 2 multiplication ('small', 0.34M): 3,000 steps per variant from an explicit-CoT model, 500 test problems", fontsize=10)
fig.savefig(out / "codi_mult.png", dpi=120, bbox_inches="tight")
for run in runs:
    for r in run["records"]:
        print(run["seed"], r["variant"], r["accuracy"], r["accuracy_ci"], r.get("diff_vs_default"), r.get("p_mcnemar_vs_default"),
              r.get("diff_vs_answer_only"), r.get("p_mcnemar_vs_answer_only"), r["teacher_task_accuracy"], round(r["problems_per_s"]), r["train_seconds"])
