"Tests of cotdistill.tasks: safe evaluation, answer extraction, generators, step checkers and bad input."
import os
os.environ["HF_HUB_OFFLINE"] = "1"
import json, random, re, time
from pathlib import Path

import pytest

from cotdistill.core import DataFileError
from cotdistill.tasks import (EXTRACTION_CASES, GSM8K_ANSWER_RE, TASKS, answers_match, default_data_dir, extract_answer,
                              find_equations, format_number, get_task, gsm8k_steps, load_gsm8k, load_icot_file, mult_line,
                              mult_digit_mutants, normalize_answer, parse_mult_line, result_digit_mutants, safe_eval)

DATA = default_data_dir()
needs_data = pytest.mark.skipif(DATA is None or not (DATA / "gsm8k").is_dir(), reason="shared/data not found")


# ---------------------------------------------------------------- safe_eval
HOSTILE = ["9**9**9**9", "10^100000", "2**2**2**2**2**2**2", "1+" * 500_000 + "1", "(" * 100_000 + "1" + ")" * 100_000,
           "(" * 60 + "1" + ")" * 60, "9" * 10_000, "-" * 900 + "1", "*".join(["9" * 40] * 24), "/".join(["7" * 40] * 24),
           "(" + "9" * 40 + ")^" + "9" * 30, "__import__('os').system('true')", "1e999999", "x" * 2_000_000, "0^-1", "1/0"]

@pytest.mark.parametrize("s", HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_safe_eval_hostile_is_fast(s):
    t0 = time.perf_counter()
    with pytest.raises(ValueError):
        safe_eval(s)
    assert time.perf_counter() - t0 < 0.5

def test_safe_eval_values():
    from fractions import Fraction
    cases = {"5 + 3 * 2": 11, "(5 + 3) * 2": 16, "0.1 + 0.2": Fraction(3, 10), "-3 - -2": -1, "48/2": 24, "2^10": 1024,
             "2**3**2": 512, "560//10": 56, "7 // 2": 3, "12×3÷4": 9, "1.5*4": 6, ".5 + 1.": Fraction(3, 2), "-(2+3)": -5}
    for s, v in cases.items(): assert safe_eval(s) == v, s
    with pytest.raises(TypeError): safe_eval(5)

def test_eval_is_never_called():
    src = (Path(__file__).parents[1] / "cotdistill" / "tasks.py").read_text()
    assert not re.search(r"(?<![\w.])(eval|exec|sympify|parse_expr)\(", src)


# ---------------------------------------------------------------- answers
def test_extraction_on_completions():
    assert len(EXTRACTION_CASES) >= 30
    assert any(g is None for _, g in EXTRACTION_CASES) and any(g and g.startswith("-") for _, g in EXTRACTION_CASES)
    assert [extract_answer(t) for t, _ in EXTRACTION_CASES] == [g for _, g in EXTRACTION_CASES]

def test_extraction_on_more_completions():
    more = [("Thus, the total cost is $12.", "12"), ("The answer is 1,234,567", "1234567"), ("#### 3.0", "3"),
            ("No numbers here at all!", None), ("The answer is -0.5 degrees", "-0.5"), ("She has 3 apples left over.", "3")]
    for t, g in more: assert extract_answer(t) == g, t
    assert extract_answer("9" * 100_000) is not None and extract_answer("a " * 500_000) is None

def test_normalize_and_match():
    assert normalize_answer("$1,234.50") == "1234.5" and normalize_answer("72.0") == "72" and normalize_answer(None) is None
    assert answers_match("72.00", "72") and answers_match("$5", "5") and not answers_match("7", "72")
    assert not answers_match(None, "5") and not answers_match("5", None)

@needs_data
def test_extraction_on_gsm8k_gold():
    raw = load_gsm8k(DATA / "gsm8k")
    rows = raw["train"] + raw["test"]
    assert len(rows) == 7473 + 1319
    for r in rows:
        official = GSM8K_ANSWER_RE.search(r["answer"]).group(1).replace(",", "")
        assert extract_answer(r["answer"]) == normalize_answer(official), r["answer"][-60:]


# ---------------------------------------------------------------- registry and bad input
def test_unknown_task_lists_known():
    with pytest.raises(KeyError) as e: get_task("nope")
    for name in ("arith", "mult", "gsm8k"): assert name in str(e.value)
    assert {"arith", "mult", "gsm8k"} <= set(TASKS)

def test_bad_config_is_named():
    with pytest.raises(TypeError, match="allowed"): get_task("arith", max_step=3)
    with pytest.raises(ValueError, match="allowed"): get_task("arith", digit_order="backwards")
    with pytest.raises(ValueError, match="choose from"): get_task("arith", ops=["+", "%"])

def test_malformed_jsonl_names_file_and_line(tmp_path):
    good = json.dumps({"question": "q?", "answer": "1 + 1 = <<1+1=2>>2\n#### 2"})
    (tmp_path / "test.jsonl").write_text(good + "\n")
    (tmp_path / "train.jsonl").write_text(good + "\n" + good + "\n{not json\n" + good + "\n")
    task = get_task("gsm8k", data_dir=str(tmp_path))
    with pytest.raises(DataFileError) as e: task.splits(n_validation=1)
    assert "train.jsonl" in str(e.value) and "line 3" in str(e.value)
    (tmp_path / "train.jsonl").write_text(good + "\n" + json.dumps({"question": "q2?"}) + "\n")
    with pytest.raises(DataFileError) as e: task.splits(n_validation=1)
    assert "line 2" in str(e.value) and "answer" in str(e.value)

def test_missing_gsm8k_dir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.jsonl"): get_task("gsm8k", data_dir=str(tmp_path / "nowhere")).splits()

def test_bad_icot_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text(mult_line(1234, 5678) + "\n" + "1 2 * 3 4 no cot here\n")
    with pytest.raises(DataFileError, match=r"bad\.txt, line 2"): load_icot_file(p)


# ---------------------------------------------------------------- arith
@pytest.mark.parametrize("order", ["lsd", "msd"])
def test_arith_checker_gold_and_mutants(order):
    task = get_task("arith", digit_order=order, ops=["+", "-", "*", "/"])
    ds = task.splits(seed=1, n_train=300, n_validation=50, n_test=200)
    rows = [r for split in ds.values() for r in split]
    rng = random.Random(0)
    for r in rows:
        for text in (r["rationale"], r["rationale_verbose"]):
            res = task.check_rationale(text, r["question"])
            assert res["valid"] and res["n_steps"] == r["n_steps"] == res["n_valid"], (text, res)
            for m in result_digit_mutants(text, rng, 3):
                assert not task.check_rationale(m, r["question"])["valid"], (text, m)

def test_arith_splits_disjoint_deterministic_and_in_range():
    task = get_task("arith")
    ds = task.splits(seed=0, n_train=2000, n_validation=200, n_test=300)
    qs = {k: set(v["question"]) for k, v in ds.items()}
    assert {k: len(v) for k, v in ds.items()} == {"train": 2000, "validation": 200, "test": 300, "test_more_steps": 300, "test_larger_numbers": 300}
    for a in qs:
        assert len(qs[a]) == ds[a].num_rows  # no duplicates inside a split either
        for b in qs:
            if a < b: assert not qs[a] & qs[b], (a, b)
    again = task.splits(seed=0, n_train=2000, n_validation=200, n_test=300)
    assert list(again["train"]["question"]) == list(ds["train"]["question"])
    assert list(task.splits(seed=1, n_train=10, n_validation=5, n_test=5)["test"]["question"]) != list(ds["test"]["question"])[:5]
    cfg = task.cfg
    for r in ds["train"]:
        assert cfg.min_steps <= r["n_steps"] <= cfg.max_steps
        for s in r["steps"]: assert cfg.min_value <= int(s["result"]) <= cfg.max_value and int(s["b"]) <= cfg.max_operand
    assert min(ds["test_more_steps"]["n_steps"]) > cfg.max_steps

def test_arith_completion_round_trip():
    for order in ("lsd", "msd"):
        task = get_task("arith", digit_order=order)
        for r in task.generate(50, seed=3):
            comp = task.format_completion(r["rationale"], r["answer"])
            assert comp.startswith(" ") and " #### " in comp
            assert task.parse_completion(comp) == (r["rationale"], r["answer"])
            assert task.parse_completion(task.format_completion("", r["answer"])) == ("", r["answer"])
    lsd = get_task("arith")
    assert lsd.format_completion("", "120") == " #### 021" and lsd.parse_completion(" #### 021") == ("", "120")
    assert lsd.parse_completion("5 + 3 = 8 and no marker")[1] is None

def test_arith_checker_rejects_ungrounded_operands():
    task = get_task("arith", digit_order="msd")
    q = "Alice has 5 apples. She buys 3 more. She gives away 2. How many apples does Alice have now?"
    assert task.check_rationale("5 + 3 = 8 ; 8 - 2 = 6", q)["valid"]
    bad = task.check_rationale("5 + 4 = 9 ; 9 - 2 = 7", q)
    assert not bad["valid"] and bad["n_valid"] == 1 and any("operand 4" in e for e in bad["errors"])
    assert task.check_rationale("", q) == dict(n_steps=0, n_valid=0, valid=False, errors=["no checkable step (no 'expression = number')"])

def test_arith_vocabulary_covers_data():
    task = get_task("arith", ops=["+", "-", "*", "/"])
    vocab = {w for t in task.vocabulary_texts() for w in re.findall(r"[^\W\d_]+|[^\w\s]", t)}
    rows = task.generate(500, seed=0)
    text = " ".join(r["question"] + " " + task.format_completion(r["rationale_verbose"], r["answer"]) for r in rows)
    assert set(re.findall(r"[^\W\d_]+|[^\w\s]", text)) <= vocab


# ---------------------------------------------------------------- mult
@needs_data
@pytest.mark.parametrize("fname", ["4x4_valid.txt", "5x5_valid.txt"])
def test_mult_generator_writes_published_lines(fname):
    rows = load_icot_file(DATA / "icot_mult" / fname)
    assert len(rows) == 1000
    for r in rows:
        assert mult_line(r["a"], r["b"], r["k"]) == r["line"]
        assert int(r["answer"]) == r["a"] * r["b"]

@needs_data
def test_mult_checker_gold_and_mutants():
    task = get_task("mult")
    rng = random.Random(0)
    rows = load_icot_file(DATA / "icot_mult" / "4x4_valid.txt") + load_icot_file(DATA / "icot_mult" / "5x5_valid.txt")
    for r in rows:
        res = task.check_rationale(r["rationale"], r["question"])
        assert res["valid"] and res["n_steps"] == 2 * r["k"] - 2, res
        for m in mult_digit_mutants(r["rationale"], rng, 3):
            assert not task.check_rationale(m, r["question"])["valid"], m

def test_mult_splits_and_round_trip():
    for k in (2, 3):
        task = get_task("mult", k=k, larger_k=k + 1)
        ds = task.splits(seed=0, n_train=400, n_validation=50, n_test=50)
        qs = {s: set(v["question"]) for s, v in ds.items()}
        assert all(not qs[a] & qs[b] for a in qs for b in qs if a < b)
        for r in [x for v in ds.values() for x in v]:
            assert task.check_rationale(r["rationale"], r["question"])["valid"]
            comp = task.format_completion(r["rationale"], r["answer"])
            assert task.parse_completion(comp) == (r["rationale"], r["answer"])
            kk = len(r["question"].split(" * ")[0].split())
            assert mult_line(*[int(x.replace(" ", "")[::-1]) for x in r["question"].split(" * ")], kk) == \
                r["question"] + "||" + comp.strip()

def test_mult_line_parse_round_trip():
    for a, b in [(7, 8), (12, 34), (2365, 4347), (99999, 99999)]:
        p = parse_mult_line(mult_line(a, b))
        assert (p["a"], p["b"], int(p["answer"])) == (a, b, a * b)


# ---------------------------------------------------------------- gsm8k
@needs_data
def test_gsm8k_splits_and_gold_checker():
    task = get_task("gsm8k", data_dir=str(DATA / "gsm8k"))
    ds = task.splits(seed=0, n_validation=300)
    assert ds["test"].num_rows == 1319 and ds["validation"].num_rows == 300
    qs = {k: set(v["question"]) for k, v in ds.items()}
    assert all(not qs[a] & qs[b] for a in qs for b in qs if a < b)
    assert list(task.splits(seed=0, n_validation=300)["validation"]["question"]) == list(ds["validation"]["question"])
    r = ds["test"][0]
    assert "####" not in r["rationale"] and r["answer"] == "18" and r["steps"][0] == {"a": "16-3-4", "op": "", "b": "", "result": "9"}
    assert task.parse_completion(task.format_completion(r["rationale"], r["answer"]))[1] == "18"
    assert task.parse_completion("so she makes 18 dollars. The answer is 18.")[1] == "18"
    rows = [x for v in ds.values() for x in v]
    valid = [task.check_rationale(x["rationale"], x["question"])["valid"] for x in rows]
    assert sum(valid) / len(valid) > 0.98
    # every failure is a solution without calculator annotations
    assert all(not x["steps"] for x, v in zip(rows, valid) if not v)

def test_gsm8k_checker_on_model_text():
    task = get_task("gsm8k")
    assert task.check_rationale("She sells 16-3 = <<16-3=13>>13 eggs", "")["valid"]
    assert not task.check_rationale("She sells 16-3 = <<16-3=12>>12 eggs", "")["valid"]
    assert task.check_rationale("Each gets 10/3 = <<10/3=3.33>>3.33 cups", "")["valid"]
    assert not get_task("gsm8k", rounding=False).check_rationale("Each gets <<10/3=3.33>>3.33", "")["valid"]
    assert not task.check_rationale("<<9**9**9**9=1>>", "")["valid"]   # hostile annotation: rejected, not hung
    assert task.check_rationale("16 - 3 = 13 and 13 * 2 = 26", "")["valid"]   # plain text without annotations
    assert gsm8k_steps("<<48/2=24>>") == [{"a": "48", "op": "/", "b": "2", "result": "24"}]


# ---------------------------------------------------------------- checkers on hostile text
MEGA = ["1 + 2 = 3 " * 100_000, "(" * 1_000_000 + "=", "1+" * 60 + "= 5 " * 50_000, "9" * 1_000_000 + "=9", "= " * 500_000,
        "1 =1" * 250_000, "<<" + "9" * 1_000_000 + "=1>>", "1 " * 500_000, "( 1 ) + " * 100_000, "#### " + "9" * 1_000_000]

@pytest.mark.parametrize("name", ["arith", "mult", "gsm8k"])
def test_checkers_and_parsers_bounded_on_megabyte_text(name):
    task = get_task(name)
    q = "5 6 3 2 * 7 4 3 4" if name == "mult" else "Alice has 5 apples. She buys 3 more."
    for s in MEGA:
        t0 = time.perf_counter()
        res = task.check_rationale(s, q)
        task.parse_completion(s)
        assert time.perf_counter() - t0 < 2.0, (name, s[:30])
        assert set(res) == {"n_steps", "n_valid", "valid", "errors"}
