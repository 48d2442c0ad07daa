"""Records (02d_records): the schema every stage writes through, checked on every committed report; and a quick-profile
student trained twice gives the same per-problem records (budgets in steps make runs repeatable)."""
import json
from pathlib import Path

import pytest

from cotdistill.core import profile_section
from cotdistill.records import check_record, check_report, pair_records, save_method_outputs
from cotdistill.sft import run_method, sft_tokenizer
from cotdistill.models import make_model
from cotdistill.tasks import get_task
from cotdistill.train import TrainConfig

REPORTS = Path(__file__).resolve().parent.parent / "reports"
TIMING = {"train_seconds", "problems_per_s", "seconds", "train_tokens_per_s", "elapsed_s", "latency_s"}


@pytest.mark.parametrize("path", sorted(REPORTS.glob("*/metrics.json")), ids=lambda p: p.parent.name)
def test_every_committed_report_follows_the_schema(path):
    recs = check_report(path)
    assert recs, f"{path} is empty"
    for r in recs:
        assert r.get("profile") == path.parent.name, (r["method"], r.get("profile"))
        for k, v in r.items():   # portable: no machine path anywhere
            assert not (isinstance(v, str) and (v.startswith("/") or "/tmp/" in v)), (r["method"], k, v)


def test_committed_run_json_is_portable():
    for p in REPORTS.glob("*/run.json"):
        text = p.read_text()
        assert '"/tmp/' not in text and '"/work/' not in text and '"/home/' not in text, p


def test_a_bad_record_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"field 'accuracy' = 1.5 must lie in \[0, 1\]"):
        save_method_outputs(tmp_path, "cot_sft", [{"id": 0, "correct": True}],
                            record=dict(track="scratch", seed=0, accuracy=1.5, profile="smoke"))
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "records").exists()


def _strip(recs):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in recs]


def test_quick_profile_student_trained_twice_gives_identical_records(tmp_path):
    "cot_sft at the quick profile's settings, its budget cut to 300 steps by an override: two runs, the same answers, word for word."
    P = profile_section("quick", "sft", max_steps=300)
    task = get_task("arith", digit_order=profile_section("quick", "tasks").digit_order)
    sp = task.splits(seed=0, n_train=3000, n_validation=10, n_test=200, hard=False)
    tok = sft_tokenizer(task)
    out = []
    for run in ("a", "b"):
        cfg = TrainConfig(max_steps=P.max_steps, batch_size=P.batch_size, lr=P.lr, warmup_steps=P.warmup_steps, schedule=P.schedule,
                          time_budget_s=P.time_budget_s, log_every=50, ckpt_every=0, progress=False, seed=0)
        rec = run_method("cot_sft", make_model("student", tok, seed=0), tok, task, sp["train"], cfg, out_dir=tmp_path / run,
                         eval_data=sp["test"], report_dir=tmp_path / f"report-{run}", similarity=None, n_boot=50, max_new_tokens=96,
                         extra={"profile": "quick"})
        assert rec["steps"] == 300 and rec["stopped"] == "done"
        out.append([json.loads(l) for l in (tmp_path / f"report-{run}" / "records" / "cot_sft.jsonl").read_text().splitlines()])
    assert len(out[0]) == 200 and _strip(out[0]) == _strip(out[1])
    check_report_rows = [json.loads(l) for l in (tmp_path / "report-a" / "metrics.jsonl").read_text().splitlines()]
    assert check_record(check_report_rows[0])["records_path"] == "records/cot_sft.jsonl"
    assert pair_records(check_report_rows, tmp_path / "report-a")[0]["p_vs_control"] is None   # cot_sft is the scratch track's control


def test_a_report_log_with_a_record_outside_the_schema_is_collected_without_it(tmp_path):
    "A metrics.jsonl that still holds a record from before the schema: the report leaves it out, with a warning naming the line."
    from cotdistill.reproduce import collect_metrics
    good = dict(method="cot_sft", track="scratch", seed=0, accuracy=0.9, profile="quick")
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"method": "cot_sft", "seed": 0, "accuracy": 0.5}) + "\n" + json.dumps(good) + "\n")
    with pytest.warns(UserWarning, match=r"1 record\(s\) outside the schema .*metrics.jsonl, line 1: missing field\(s\) \[.track.\]"):
        recs = collect_metrics(tmp_path)
    assert [r["accuracy"] for r in recs] == [0.9]
