"""`cotdistill-reproduce` end to end: papermill runs, reports, failures and determinism.

Three smoke runs start together, once per test run, each with its own empty artifact cache: the
whole smoke profile (every notebook, 4 minutes on 2 cores; the end-to-end test reads it), and twice
the same subset that crosses stages (`--stages dataset sft summary --lessons no`: the teacher's
samples and the distillation set, six students trained and evaluated, the summary notebook), which
the determinism test compares. Each notebook builds what it needs or reads it from the cache, so
the subset can leave the lesson-only notebooks out.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from cotdistill.records import check_report

SUBSET = ["dataset", "sft", "summary", "--lessons", "no"]   # crosses stages: dataset.json -> sft's metrics -> the summary
# the record schema's fields (02d_records)
FIELDS = {"method", "seed", "n_params", "accuracy", "accuracy_ci", "teacher_accuracy", "rationale_tokens", "length_ratio",
          "validity", "similarity", "similarity_kind", "problems_per_s", "train_seconds"}


def _env(cache: Path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "COTDISTILL_CACHE": str(cache), "COTDISTILL_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _cmd(out: Path, *args: str, html: bool = False) -> list[str]:
    return [sys.executable, "-m", "cotdistill.reproduce", "--profile", "smoke", "--out", str(out), *([] if html else ["--no-html"]), *args]


ALL_METHODS = {"teacher", "teacher_matched", "answer_only", "cot_sft", "cot_sft_unfiltered", "step_by_step", "cot_sft_continued",
               "cot_sft_unfiltered_continued", "cot_sft_consistency", "on_policy", "on_policy_verbose", "gkd",
               "grpo", "progressive", "internalized", "codi"}   # the methods' names as the record schema (02d_records) spells them: every method the kit has


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "The whole smoke profile, and the subset twice with the same seed; each with its own empty cache; side by side."
    root = tmp_path_factory.mktemp("reproduce")
    t0 = time.time()
    args = {"full": (), "A": ("--stages", *SUBSET), "B": ("--stages", *SUBSET)}
    logs = {k: (open(root / f"{k}.out", "w"), open(root / f"{k}.err", "w")) for k in args}  # files: no pipe fills up
    procs = {k: subprocess.Popen(_cmd(root / k, *a, html=k == "full"), env=_env(root / f"cache{k}"), stdout=logs[k][0], stderr=logs[k][1])
             for k, a in args.items()}
    for p in procs.values(): p.wait(timeout=1800)
    for o, e in logs.values(): o.close(); e.close()
    secs = time.time() - t0
    print(f"the smoke profile and two runs of {' '.join(SUBSET)}, side by side: {secs:.0f} s")
    return {k: dict(rc=p.returncode, stdout=(root / f"{k}.out").read_text(), stderr=(root / f"{k}.err").read_text(),
                    report=root / k / "smoke", seconds=secs) for k, p in procs.items()}


def _check_run(r: dict, methods: set[str]):
    assert r["rc"] == 0, r["stderr"][-3000:]
    rep = r["report"]
    run = json.loads((rep / "run.json").read_text())
    assert run["failures"] == [] and run["complete"] is True
    nbs = [n["notebook"] for n in run["notebooks"]]
    assert nbs[-1] == "12b_summary.ipynb" and nbs.index("05_dataset.ipynb") < nbs.index("07_sft.ipynb")
    for n in nbs: assert (rep / "notebooks" / n).exists(), n   # papermill's executed copies
    # the parameters papermill injected reached the notebook
    sft = nbformat.read(str(rep / "notebooks" / "07_sft.ipynb"), as_version=4)
    injected = [c for c in sft.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "profile = \"smoke\"" in injected[0].source and str(rep) in injected[0].source
    metrics = check_report(rep / "metrics.json")   # every record the stages wrote follows the one schema
    assert methods <= {m["method"] for m in metrics}, [m["method"] for m in metrics]
    assert str(rep) not in (rep / "run.json").read_text() and str(rep) not in (rep / "metrics.json").read_text()   # portable paths
    for m in metrics: assert FIELDS <= set(m), (m["method"], FIELDS - set(m))
    for m in metrics: assert 0 <= m["accuracy"] <= 1 and m["accuracy_ci"][0] <= m["accuracy"] <= m["accuracy_ci"][1]
    ds = json.loads((rep / "dataset.json").read_text())
    assert {"per_temperature", "rows", "valid_share"} <= set(ds)
    summary = (rep / "summary.md").read_text()
    assert "| cot_sft |" in summary and "07_sft.ipynb" in summary
    # the summary notebook ran on this run's files, not on the committed ones
    s = nbformat.read(str(rep / "notebooks" / "12b_summary.ipynb"), as_version=4)
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", "")) for c in s.cells
                     if c.cell_type == "code" for o in c.get("outputs", []))
    assert str(rep) in text and "| cot_sft |" in text and "p (McNemar)" in text


def test_smoke_profile_end_to_end(runs):
    "Every stage through papermill in dependency order; metrics.json has every method; summary.md and the summary notebook with the figures."
    _check_run(runs["full"], ALL_METHODS)
    rep = runs["full"]["report"]
    assert list(rep.glob("*.png")), "the stages saved no figures"
    s = nbformat.read(str(rep / "notebooks" / "12b_summary.ipynb"), as_version=4)
    assert any("image/png" in o.get("data", {}) for c in s.cells if c.cell_type == "code" for o in c.get("outputs", []))
    run = json.loads((rep / "run.json").read_text())
    print(f"smoke profile: {run['total_seconds']:.0f} s for {len(run['notebooks'])} notebooks (side by side with the subset runs)")
    # the report page is kept beside summary.md: the targets table, a sentence per method, the limits, the figures inline
    page = (rep / "summary.html").read_text()
    for part in ("Every method against the targets", "What each method shows", "The limits of this run", "**cot_sft**", "data:image/png"):
        assert part in page or part.replace("**", "<strong>", 1).replace("**", "</strong>") in page, part


def test_smoke_refine_track(runs):
    "Every refinement starts from cot_sft with the same added steps and names its control; GRPO is paired with its own continued start."
    m = {r["method"]: r for r in check_report(runs["full"]["report"] / "metrics.json")}
    refs = [m[x] for x in ("cot_sft_continued", "cot_sft_consistency", "on_policy", "on_policy_verbose", "gkd")]
    assert {r["track"] for r in refs} == {"refine"} and {r["start"] for r in refs} == {"cot_sft"} and len({r["steps"] for r in refs}) == 1
    for r in refs: assert r["start_track"] == "scratch" and r["total_steps"] == m["cot_sft"]["steps"] + r["steps"], r["method"]
    for r in refs[1:]:
        assert r["control"] == "cot_sft_continued" and r["p_vs_control"] is not None and len(r["diff_ci_vs_control"]) == 2, r["method"]
    assert m["on_policy"]["on_policy_batches"] == m["on_policy"]["steps"]                  # lambda = 1: every batch is the student's own
    assert (m["on_policy"]["teacher"], m["on_policy_verbose"]["teacher"], m["cot_sft_continued"]["teacher"]) == ("matched", "offline", "offline")
    assert m["teacher_matched"]["start"] == "teacher" and m["teacher_matched"]["p_vs_start"] is not None
    g, c = m["grpo"], m["cot_sft_unfiltered_continued"]
    assert g["control"] == c["method"] and g["p_vs_control"] is not None and c["start"] == g["start"] == "cot_sft_unfiltered"
    assert c["steps"] == g["steps"]


def test_committed_report_page_matches_its_metrics():
    "reports/quick/summary.html is the report of the committed metrics.json: every record's sentence with its accuracy; no machine path."
    rep = Path(__file__).resolve().parents[1] / "reports" / "quick"
    page, metrics = (rep / "summary.html").read_text(), json.loads((rep / "metrics.json").read_text())
    for m in metrics:
        assert f"<strong>{m['method']}</strong>" in page and f"{100 * m['accuracy']:.1f}%" in page, m["method"]
    assert "report directory: reports/quick" in page and str(rep.parents[1]) not in page


def test_report_only_rebuilds_the_page_and_nothing_else(runs):
    "`--report-only` executes the summary on an existing report: summary.html appears, run.json and metrics.json are untouched."
    rep = runs["A"]["report"]
    before = {n: (rep / n).read_bytes() for n in ("run.json", "metrics.json", "summary.md")}
    assert not (rep / "summary.html").exists()   # the subset ran with --no-html
    r = subprocess.run([sys.executable, "-m", "cotdistill.reproduce", "--profile", "smoke", "--out", str(rep.parent), "--report-only"],
                       env=_env(rep.parent / "cache-report"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "What each method shows" in (rep / "summary.html").read_text()
    assert {n: (rep / n).read_bytes() for n in before} == before


def test_report_only_names_a_missing_report(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cotdistill.reproduce", "--profile", "smoke", "--out", str(tmp_path), "--report-only"],
                       env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "run.json is missing" in r.stderr and "not a report directory" in r.stderr, r.stderr


# timing fields differ between runs, and paths name each run's own directories
def _comparable(rec: dict) -> dict:
    drop = lambda k: (k.endswith(("seconds", "_per_s", "_path", "_dir")) or k in ("elapsed", "started", "time"))
    return {k: v for k, v in rec.items() if not drop(k)}


def test_same_seed_same_metrics(runs):
    "Two runs with the same seed and separate empty caches give the same metrics (timing fields aside)."
    _check_run(runs["A"], {"teacher", "answer_only", "cot_sft"}); _check_run(runs["B"], {"teacher", "answer_only", "cot_sft"})
    a, b = (json.loads((runs[k]["report"] / "metrics.json").read_text()) for k in ("A", "B"))
    assert len(a) == len(b) > 0
    key = lambda r: (r["method"], str(r.get("seed")))
    a, b = sorted(a, key=key), sorted(b, key=key)
    for ra, rb in zip(a, b): assert _comparable(ra) == _comparable(rb), ra["method"]
    da, db = (json.loads((runs[k]["report"] / "dataset.json").read_text()) for k in ("A", "B"))
    assert da == db


def _notebook(cells: list[str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_failing_notebook_exits_nonzero_and_names_it(tmp_path):
    "A notebook that raises stops the run: exit status 1, and stderr names the notebook, the cell and the error."
    nbs = tmp_path / "nbs"; nbs.mkdir()
    nbformat.write(_notebook(['profile = "course"', "x = 1", "raise ValueError('deliberate failure in the test')"]),
                   str(nbs / "00_core.ipynb"))
    nbformat.write(_notebook(['profile = "course"', "open('ran.txt', 'w').write('yes')"]), str(nbs / "01_tasks.ipynb"))
    r = subprocess.run(_cmd(tmp_path / "out", "--stages", "tasks", "--nbs", str(nbs)), env=_env(tmp_path / "cache"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "00_core.ipynb" in r.stderr and "cell" in r.stderr and "ValueError" in r.stderr and "deliberate failure" in r.stderr
    assert not (nbs / "ran.txt").exists()   # the run stopped at the failing notebook
    run = json.loads((tmp_path / "out" / "smoke" / "run.json").read_text())
    assert run["complete"] and len(run["failures"]) == 1 and "00_core.ipynb" in run["failures"][0]
    assert "FAILED" in (tmp_path / "out" / "smoke" / "summary.md").read_text()
    # --keep-going runs the next notebook and still exits non-zero
    r = subprocess.run(_cmd(tmp_path / "out", "--stages", "tasks", "--nbs", str(nbs), "--keep-going"),
                       env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and (nbs / "ran.txt").exists()


def test_unknown_stage_fails_first(tmp_path):
    "An unknown stage name fails before anything runs, with exit status 2."
    r = subprocess.run(_cmd(tmp_path / "out", "--stages", "nope"), env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown stage" in r.stderr


def test_dry_run_ends_with_the_summary(tmp_path):
    "The plan of the whole profile ends with the summary notebook, which gets report_dir like the stages."
    r = subprocess.run(_cmd(tmp_path / "out", "--dry-run"), env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [l for l in r.stdout.splitlines() if ".ipynb" in l]
    assert "12b_summary.ipynb" in lines[-1] and '"report_dir"' in lines[-1], lines[-1]


def test_real_profile_plans_only_its_own_stages(tmp_path):
    "`--profile real` runs 15_real and the summary; the other profiles leave 15_real out unless it is named."
    from cotdistill.reproduce import default_stages
    assert default_stages("real") == ["real", "summary"] and "real" not in default_stages("quick")
    cmd = [sys.executable, "-m", "cotdistill.reproduce", "--profile", "real", "--out", str(tmp_path / "out"), "--dry-run"]
    r = subprocess.run(cmd, env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    planned = [l.split()[0] for l in r.stdout.splitlines() if l.startswith("  ") and ".ipynb" in l.split()[0]]
    assert planned == ["15_real.ipynb", "12b_summary.ipynb"], r.stdout
