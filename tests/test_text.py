"The kit's text: it speaks of the kit alone, and what it states about its committed reports agrees with them."
import json, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"

# Words that point a reader outside the repository: kept in .ci/ so that this file does not contain them itself.
_LINES = [l.strip() for l in (ROOT / ".ci" / "outside_words.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
OUTSIDE = re.compile("|".join(l for l in _LINES if not l.startswith(("catch: ", "pass: "))), re.I)
CATCH = [l[len("catch: "):] for l in _LINES if l.startswith("catch: ")]
PASS = [l[len("pass: "):] for l in _LINES if l.startswith("pass: ")]


def _texts(prose_only: bool = False):
    "(name, text) of every notebook cell, README, module and test the kit ships (prose_only: markdown cells and the README)."
    for nb in sorted(p for p in (ROOT / "nbs").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts):
        for i, c in enumerate(json.loads(nb.read_text())["cells"]):
            if c["cell_type"] == "markdown" or not prose_only: yield f"{nb.name} cell {i}", "".join(c["source"])
    if prose_only: yield "README.md", (ROOT / "README.md").read_text(); return
    for p in [ROOT / "README.md", *sorted((ROOT / "cotdistill").glob("*.py")), *sorted((ROOT / "tests").glob("*.py"))]:
        if p.name != "_modidx.py": yield p.name, p.read_text()


def test_the_text_speaks_of_the_kit_alone():
    hits = [f"{name}: ...{t[max(0, m.start() - 40):m.end() + 40]!r}..." for name, t in _texts() for m in OUTSIDE.finditer(t)]
    assert not hits, "words that point outside the repository:\n" + "\n".join(hits)


def test_the_outside_words_pattern_catches_them():
    assert CATCH and PASS
    for t in CATCH: assert OUTSIDE.search(t), t
    for t in PASS: assert not OUTSIDE.search(t), t


def _report_json():
    for p in sorted(REPORTS.rglob("*.json")): yield p, json.loads(p.read_text())


def _strings(x):
    if isinstance(x, str): yield x
    elif isinstance(x, dict):
        for v in x.values(): yield from _strings(v)
    elif isinstance(x, list):
        for v in x: yield from _strings(v)


def test_committed_records_name_files_relative_to_the_repository():
    bad = [f"{p.relative_to(ROOT)}: {s}" for p, d in _report_json() for s in _strings(d)
           if re.match(r"^(/[A-Za-z0-9_.-]+/|[A-Za-z]:\\)", s)]
    assert not bad, "absolute paths in committed records:\n" + "\n".join(bad[:20])


def test_the_quick_profile_trains_each_method_for_its_step_budget():
    "07_sft says each method has its own step budget (method_steps); the committed records agree."
    from cotdistill.core import profile_section
    budget = profile_section("quick", "sft")["method_steps"]
    recs = {r["method"]: r for r in json.loads((REPORTS / "quick" / "metrics.json").read_text())}
    for m, steps in budget.items():
        assert recs[m]["steps"] == steps, (m, recs[m]["steps"], steps)
    assert len(set(budget.values())) > 1   # not one budget: the lesson says so


def test_the_concise_filter_defaults_that_05_states():
    from cotdistill.core import DatasetStage
    d = DatasetStage()
    assert (d.length_limit, d.token_budget) == (1.0, 90)


def test_the_dataset_caption_facts():
    "05's caption: the accepted count is not the correct share shrunk evenly, and most questions that keep nothing had a correct sample."
    d = json.loads((REPORTS / "quick" / "dataset.json").read_text())
    t = d["per_temperature"]
    acc = [t[k]["accepted"] for k in sorted(t, key=float)]
    assert acc != sorted(acc, reverse=True)
    uncovered = d["questions"] - d["questions_with_rows"]
    assert d["no_correct_share"] * d["questions"] < uncovered / 2


def test_report_files_the_text_points_at_exist():
    missing = []
    for name, t in _texts(prose_only=True):
        for m in re.finditer(r"(?:\.\./)?(reports/[A-Za-z0-9_./-]+\.(?:png|json|jsonl|md|csv|py|html))", t):
            p = m.group(1)
            if "<" in p or "{" in p or "smoke" in p or re.search(r"/(runs|records|logs|notebooks|students|datasets)/", p): continue   # run outputs the repository ignores
            if not (ROOT / p).exists(): missing.append(f"{name}: {p}")
    assert not missing, "files the text names that are not in the repository:\n" + "\n".join(sorted(set(missing)))


def test_index_and_readme_list_the_same_notebooks():
    nb = json.loads((ROOT / "nbs" / "index.ipynb").read_text())
    idx = set(re.findall(r"`(\d\d[a-z]?_[a-z_]+)`", "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")))
    readme = set(re.findall(r"^\| \[(\d\d[a-z]?_[a-z_]+)\]", (ROOT / "README.md").read_text(), re.M))
    on_disk = {p.stem for p in (ROOT / "nbs").glob("[0-9]*.ipynb")}
    assert readme == on_disk, (on_disk - readme, readme - on_disk)
    assert {s for s in on_disk if not re.match(r"^\d\d[a-z]_", s)} <= idx, on_disk - idx


def test_the_readme_findings_agree_with_the_quick_records():
    "The README's sentences about the quick run (prose, so not generated) hold for reports/quick/metrics.json."
    m = {r["method"]: r for r in json.loads((REPORTS / "quick" / "metrics.json").read_text())}
    text = (ROOT / "README.md").read_text()
    a, c, u, g = m["answer_only"], m["cot_sft"], m["cot_sft_unfiltered"], m["grpo"]
    assert "rationales a third as long as the teacher's" in text and 0.28 <= c["length_ratio"] <= 0.4
    assert c["accuracy"] / c["teacher_accuracy"] > 0.9 and a["p_vs_control"] < 0.05                     # nearly all kept; the floor far below
    assert "for twice the steps" in text and 1.8 <= a["steps"] / c["steps"] <= 2.2
    assert "less accurate than\n  `cot_sft` (its `p_vs_control`)" in text and u["accuracy"] < c["accuracy"] and u["p_vs_control"] < 0.05
    assert "nearly as long as the teacher's" in text and u["length_ratio"] > 0.85
    assert "no significant change in accuracy (`p_vs_start`)" in text and g["p_vs_start"] >= 0.05 and g["start"] == "cot_sft_unfiltered"
    assert "down to `cot_sft`'s length" in text and abs(g["rationale_tokens"] - c["rationale_tokens"]) / c["rationale_tokens"] < 0.1
    p = m["progressive"]
    assert "below it in the paired test (`p_vs_control`)" in text and p["accuracy"] < c["accuracy"] and p["p_vs_control"] < 0.05
    assert "the teacher's style comes with its knowledge" in text and m["step_by_step"]["accuracy"] < 0.1
    v, o, k, kd, ctl = m["on_policy_verbose"], m["on_policy"], m["gkd"], m["cot_sft_consistency"], m["cot_sft_continued"]
    assert v["rationale_tokens"] > 0.8 * m["teacher"]["rationale_tokens"] and v["p_vs_control"] < 0.05   # "nearly as long as the teacher's"
    assert 0.07 < (ctl["accuracy"] - v["accuracy"]) / ctl["accuracy"] < 0.15                               # "about a tenth of its accuracy"
    assert abs(o["rationale_tokens"] - c["rationale_tokens"]) / c["rationale_tokens"] < 0.1                # "keeps its length"
    for x in (o, k): assert 0 < x["accuracy"] - ctl["accuracy"] < 0.01 and x["p_vs_control"] >= 0.05, x["method"]
    assert -0.015 < kd["diff_ci_vs_control"][0] and kd["diff_ci_vs_control"][1] < 0.015                    # "matches the control"
    for x in ("internalized", "codi"): assert m[x]["p_vs_floor"] >= 0.05, x                                       # "at the answer-only level"


def test_the_refine_lesson_agrees_with_the_quick_records():
    "07b_refine's closing section (prose) holds for reports/quick/metrics.json."
    m = {r["method"]: r for r in json.loads((REPORTS / "quick" / "metrics.json").read_text())}
    nb = json.loads((ROOT / "nbs" / "07b_refine.ipynb").read_text())
    text = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    start, ctl, tm = m["cot_sft"], m["cot_sft_continued"], m["teacher_matched"]
    assert "barely moves" in text and abs(ctl["accuracy"] - start["accuracy"]) < 0.01
    assert "three times the length" in text and 2.5 < m["teacher"]["rationale_tokens"] / start["rationale_tokens"] < 3.5
    for x in ("on_policy", "gkd"):
        r = m[x]
        assert "by less than a point" in text and 0 < r["accuracy"] - ctl["accuracy"] < 0.01 and r["p_vs_control"] >= 0.05, x
        assert "not\n  half of it" in text and (r["accuracy"] - start["accuracy"]) / (tm["accuracy"] - start["accuracy"]) < 0.5, x
        assert "a few dozen problems" in text and 10 <= r["wins_vs_control"] + r["losses_vs_control"] <= 60, x
    assert "within a point and a half of zero" in text and all(abs(d) < 0.015 for d in m["cot_sft_consistency"]["diff_ci_vs_control"])


def test_the_readme_refine_seeds_sentence_agrees_with_the_committed_seeds():
    "The README's sentence under the refine-seeds table holds in every seed of reports/paper/refine_seeds.json."
    assert "on-policy distillation does not measurably help" in (ROOT / "README.md").read_text()
    res = json.loads((REPORTS / "paper" / "refine_seeds.json").read_text())
    assert len(res["runs"]) >= 3
    for run in res["runs"]:
        m = {r["method"]: r for r in run["records"]}
        v = m["on_policy_verbose"]
        assert v["rationale_tokens"] > 2 * m["cot_sft"]["rationale_tokens"] and v["p_vs_control"] < 0.05 and v["diff_vs_control"] < -0.05
        for x in ("on_policy", "gkd"): assert abs(m[x]["diff_vs_control"]) < 0.01 and m[x]["p_vs_control"] >= 0.05, (run["seed"], x)
