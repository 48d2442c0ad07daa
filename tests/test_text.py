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
    for x in ("cot_sft_consistency", "gkd", "step_by_step"): assert m[x]["accuracy"] < 0.1, x                     # "stay at the floor"
    for x in ("internalized", "codi"): assert m[x]["p_vs_floor"] >= 0.05, x                                       # "at the answer-only level"
