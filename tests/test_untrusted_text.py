"""Untrusted text, part 2 (part 1, the source scan for eval/exec/sympify/pickle/shell, is `test_untrusted.py`).

Every function that reads model or teacher text — each task's answer parser and step checker, the generic completion
parser, the GRPO rewards and masking, the CODI answer split, the lexical similarity — returns (or raises a clean
`ValueError`/`TypeError`) in bounded time on hostile strings: a huge exponent, a 1 MB line, 10k nested parentheses,
10^6 '=' signs, Unicode digits (Arabic-Indic, full-width, superscripts, circled) and NUL bytes.

All cases run in ONE worker subprocess (one import); the parent reads its progress line by line and kills it when a
case does not finish within `HANG_S`: a hang FAILS (naming the case) instead of blocking the suite, and the worker is
restarted after the hung case. Each case's *CPU* time (thread time, immune to the other jobs on a shared machine) must
stay under `LIMIT_S`; linear-time text transforms that are not parsers get `LINEAR_LIMIT_S` per megabyte.

API keys: `test_teachers.py::test_api_key_never_leaks` checks config, repr, caches, logs, stdout/stderr and exception
messages (4xx and 5xx, with a server that echoes the key back); here the report writers (`reproduce.write_summary`,
`reproduce.environment`, `dataset.write_dataset_report`) are checked with the key in the environment.

Found by this module: `MultTask.check_rationale` raised AttributeError on any term it could not read ('x');
`metrics.rouge_l_f1` was quadratic (two 1 MB rationales: hours) — both fixed in their notebooks."""
import json, os, select, subprocess, sys, textwrap, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import pytest

ROOT = Path(__file__).resolve().parents[1]
# Linear work on a megabyte takes about a second here, and the machine's speed varies by tens of percent
# from day to day; a quadratic blow-up on these strings (10^5 - 10^6 items) would take minutes, so 2x margin
# still tells the two apart.
LIMIT_S = 2.0          # CPU seconds per (function, hostile string)
LINEAR_LIMIT_S = 6.0   # CPU seconds for the linear-time transforms (not parsers) on a megabyte
LINEAR = {"grpo.structure_aware_mask"}
HANG_S = 20.0          # wall seconds after which a case counts as hung (generous: the machine is shared)
CLEAN = {"ValueError", "TypeError", "DataFileError", None}   # a clean rejection or a result

WORKER = textwrap.dedent(r'''
    import json, os, sys, time
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch; torch.set_num_threads(1)
    from cotdistill import tasks as T, prompting as PR, metrics as M, grpo as G, codi as C, dataset as D

    H = {
        "huge_exponent": "9**9**9**9 = 1 ; 2^99999999 = 4 ; <<9**9**9**9=9>> (10^100000)*(10^100000) = 7 #### 9**9**9**9",
        "megabyte_line": "1 + 2 = 3 " * 100_000,
        "megabyte_digits": "#### " + "9" * 1_000_000,
        "nested_parens": "(" * 10_000 + "1" + ")" * 10_000 + " = 1 #### " + "(" * 10_000,
        "equals_1e6": "=" * 1_000_000,
        "equals_spaced": "1 = " * 250_000,
        "unicode_digits": "٣ + ٤ = ٧ ; １２ + ３ = １５ ; 2² = 4 ; ⁹⁹ * 𝟗 = ① ; ५ - १ = ४ #### ٧" * 1000,
        "nul_bytes": ("1 + 2 = 3\x00 ; \x00#### 3\x00" + "\x00" * 1000) * 100,
    }
    ts = {n: T.get_task(n) for n in ("arith", "mult", "gsm8k")}
    Q = {"arith": "Alice has 5 apples. She buys 3 more.", "mult": "5 6 3 2 * 7 4 3 4", "gsm8k": "Tom has 5 apples and buys 3."}
    F = {"safe_eval": T.safe_eval, "extract_answer": T.extract_answer, "normalize_answer": T.normalize_answer,
         "answers_match": lambda s: (T.answers_match(s, "42"), T.answers_match("42", s), T.answers_match(s, s)),
         "find_equations": T.find_equations, "gsm8k_steps": T.gsm8k_steps, "gsm8k_gold_answer": T.gsm8k_gold_answer,
         "parse_mult_line": T.parse_mult_line,
         "prompting.parse_completion": PR.parse_completion,
         "prompting.cut_at_stop": lambda s: PR.cut_at_stop(s, ["\n\n", "Question:"]),
         "dataset.normalize_rationale": D.normalize_rationale,
         "metrics.simple_tokens": M.simple_tokens,
         "metrics.rouge_l_f1": lambda s: (M.rouge_l_f1(s, "4 + 3 = 7 ; 7 * 2 = 14"), M.rouge_l_f1(s, s)),
         "metrics.beyond_tolerance": lambda s: (M.beyond_tolerance(s, "3"), M.beyond_tolerance("1+2", s)),
         "metrics.annotation_digit_mutants": lambda s: len(M.annotation_digit_mutants(s)),
         "grpo.split_steps": G.split_steps, "grpo.structure_aware_mask": lambda s: G.structure_aware_mask(s, 0.5, rng=0),
         "codi.split_completion": C.split_completion}
    for n, t in ts.items():
        F[f"{n}.parse_completion"] = t.parse_completion
        F[f"{n}.parse_answer"] = t.parse_answer
        F[f"{n}.check_rationale"] = (lambda t, q: lambda s: t.check_rationale(s, q))(t, Q[n])
        F[f"{n}.rewards"] = (lambda t, q: lambda s: [r([s], answer=["8"], question=[q]) for r in
                             (G.correctness_reward(t), G.format_reward(t), G.step_validity_reward(t), G.hierarchical_reward(t, 64))])(t, Q[n])
    cases = [(f, h) for f in F for h in H]
    if sys.argv[1] == "list": print(json.dumps(cases)); raise SystemExit
    for i in range(int(sys.argv[1]), len(cases)):
        f, h = cases[i]
        print(json.dumps({"start": i}), flush=True)
        c0 = time.thread_time()
        try: F[f](H[h]); exc = None
        except Exception as e: exc = (type(e).__name__, str(e)[:200])
        print(json.dumps({"done": i, "cpu": time.thread_time() - c0, "exc": exc}), flush=True)
''')


def _run_worker(tmp: Path) -> tuple[list, dict]:
    "Run every case; a case that does not finish within HANG_S is recorded as a hang and the worker restarts after it."
    script = tmp / "worker.py"; script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cases = json.loads(subprocess.run([sys.executable, str(script), "list"], capture_output=True, text=True, env=env,
                                      timeout=120, check=True).stdout)
    results, start = {}, 0
    while start < len(cases):
        p = subprocess.Popen([sys.executable, "-u", str(script), str(start)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        fd, buf, lines = p.stdout.fileno(), b"", []   # raw reads: a buffered readline would hide lines from select()
        current, deadline = None, time.time() + 120   # the import gets 120 s
        try:
            while True:
                if not lines:
                    r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.time()))
                    if not r:   # silent too long: the current case hangs (or the import did)
                        if current is None: raise AssertionError("the worker did not start within 120 s")
                        results[current] = {"hang": True}; start = current + 1; break
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        if p.wait(10) != 0 and current is not None: results[current] = {"crash": p.returncode}; start = current + 1
                        else: start = len(cases)
                        break
                    *lines, buf = (buf + chunk).split(b"\n")
                    continue
                msg = json.loads(lines.pop(0))
                if "start" in msg: current, deadline = msg["start"], time.time() + HANG_S
                else: results[msg["done"]] = msg; current = None
        finally:
            if p.poll() is None: p.kill(); p.wait(10)
    return cases, results


@pytest.fixture(scope="module")
def hostile_results(tmp_path_factory):
    return _run_worker(tmp_path_factory.mktemp("hostile"))


def test_parsers_and_checkers_bounded_on_hostile_text(hostile_results):
    cases, results = hostile_results
    assert len(cases) >= 200 and {f.split(".")[0] for f, _ in cases} >= {"arith", "mult", "gsm8k", "grpo", "metrics"}
    problems = []
    for i, (f, h) in enumerate(cases):
        r = results.get(i, {"missing": True})
        name = f"{f}[{h}]"
        if r.get("hang") or r.get("crash") or r.get("missing"): problems.append(f"{name}: {r}"); continue
        limit = LINEAR_LIMIT_S if f in LINEAR else LIMIT_S
        if r["cpu"] > limit: problems.append(f"{name}: {r['cpu']:.2f} s CPU > {limit} s")
        if r["exc"] and r["exc"][0] not in CLEAN: problems.append(f"{name}: raised {r['exc'][0]}: {r['exc'][1]}")
    assert not problems, f"{len(problems)} of {len(cases)} hostile cases failed:\n" + "\n".join(problems)


def test_hang_detection_works(tmp_path):
    "The harness itself: a worker case that never returns is reported as a hang within HANG_S, not waited on."
    import test_untrusted_text as me
    old_w, old_h = me.WORKER, me.HANG_S
    me.WORKER = textwrap.dedent('''
        import json, sys, time
        cases = [["ok", "x"], ["sleep", "x"], ["ok", "y"]]
        if sys.argv[1] == "list": print(json.dumps(cases)); raise SystemExit
        for i in range(int(sys.argv[1]), 3):
            print(json.dumps({"start": i}), flush=True)
            if cases[i][0] == "sleep": time.sleep(600)
            print(json.dumps({"done": i, "cpu": 0.0, "exc": None}), flush=True)
    ''')
    me.HANG_S = 1.0
    try:
        t0 = time.time(); cases, res = me._run_worker(tmp_path)
    finally: me.WORKER, me.HANG_S = old_w, old_h
    assert res[1] == {"hang": True}, res
    assert res[0]["cpu"] == 0.0 and res[2]["cpu"] == 0.0 and time.time() - t0 < 30


# ---------------------------------------------------------------- API keys in reports
SECRET = "sk-test-REPORT-SECRET-0123456789"


def test_api_key_not_in_reports(tmp_path, monkeypatch):
    "With a key in the environment, the run record, summary, metrics and data-set report never contain it."
    monkeypatch.setenv("OPENAI_API_KEY", SECRET); monkeypatch.setenv("MY_TEACHER_KEY", SECRET)
    from cotdistill.core import JsonlWriter
    from cotdistill.dataset import write_dataset_report
    from cotdistill.reproduce import environment, write_summary
    from cotdistill.teachers import OpenAITeacher
    t = OpenAITeacher("m", base_url="http://127.0.0.1:9/v1", api_key_env="MY_TEACHER_KEY", cache_dir=tmp_path / "c", progress=False)
    report = tmp_path / "report"
    with JsonlWriter(report / "metrics.jsonl") as w:
        w.write({"method": "cot_sft", "track": "scratch", "seed": 0, "accuracy": 0.5, "profile": "smoke", "teacher": t.name,
                 "teacher_config": t.config()})
    run = {"profile": "smoke", "started": "now", "total_seconds": 1.0, "notebooks": [], "skipped_missing": [],
           "failures": [], "environment": environment()}
    write_summary(report, run)
    assert json.loads((report / "metrics.json").read_text())[0]["teacher_config"] == t.config()   # the record made it into the report
    from cotdistill.dataset import DATASET_JSON_KEYS
    write_dataset_report({**{k: None for k in DATASET_JSON_KEYS}, "teacher": t.config(), "teacher_repr": repr(t)}, report)
    texts = [json.dumps(run), json.dumps(t.config()), repr(t)] + [f.read_text() for f in report.rglob("*") if f.is_file()]
    assert len(texts) >= 6 and not [x for x in texts if "REPORT-SECRET" in x]
