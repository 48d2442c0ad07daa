"""Server faults: the category is covered by `tests/test_teachers_server.py` (a REAL `transformers serve` on 127.0.0.1
with a fault-injecting proxy in front of it) and `tests/test_teachers.py`; no second server is started here. This module
maps each fault the teacher client must survive (the table below) to the test that injects it, and fails if one of those tests disappears.

| fault | test (module::function) | what it asserts |
|---|---|---|
| HTTP 429 (with Retry-After) | test_teachers_server::test_every_fault_is_retried_and_the_run_completes | retried once, run completes, same samples as without the proxy |
| HTTP 500 / 503 | test_teachers_server::test_every_fault_is_retried_and_the_run_completes | retried once each |
| timeout (no reply within `timeout`) | test_teachers_server::test_every_fault_is_retried_and_the_run_completes | retried once |
| dropped connection | test_teachers_server::test_every_fault_is_retried_and_the_run_completes | retried once |
| truncated JSON (well-formed HTTP, half a body) | test_teachers_server::test_every_fault_is_retried_and_the_run_completes | retried once |
| connection cut mid-body | test_teachers_server::test_every_fault_is_retried_and_the_run_completes | retried once |
| faults under concurrency | test_teachers_server::test_concurrent_faults | every request completes |
| persistent 500: bounded retries, clear error, partial results kept | test_teachers_server::test_persistent_failure_gives_bounded_retries_then_a_clear_error | 3 attempts, `TeacherServerError` naming HTTP 500, the 2 finished samples cached and reused |
| server SIGKILLed mid-run | test_teachers_server::test_server_killed_mid_run_keeps_finished_samples | error names the port; a new server finishes only the rest |
| other 4xx (unknown model, wrong base URL) | test_teachers_server::test_other_4xx_is_a_clear_error_without_retries | no retries, message names the model / the missing /v1 |
| key echoed back in error bodies | test_teachers::test_api_key_never_leaks | the key is scrubbed from 4xx/5xx messages |
"""
import ast
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
COVERED = {
    "test_teachers_server.py": ["test_every_fault_is_retried_and_the_run_completes", "test_concurrent_faults",
                                "test_persistent_failure_gives_bounded_retries_then_a_clear_error",
                                "test_server_killed_mid_run_keeps_finished_samples",
                                "test_other_4xx_is_a_clear_error_without_retries"],
    "test_teachers.py": ["test_api_key_never_leaks"],
}
FAULTS = {"429", "500", "503", "timeout", "drop", "truncate", "cut"}


def _names(fname: str) -> set[str]:
    "Top-level function names of a test module (read from its syntax tree: no import, no server start)."
    tree = ast.parse((HERE / fname).read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


@pytest.mark.parametrize("fname", sorted(COVERED))
def test_fault_tests_exist(fname):
    missing = [t for t in COVERED[fname] if t not in _names(fname)]
    assert not missing, f"{fname} lost the server-fault tests {missing}: update this map or restore them"


def test_proxy_injects_every_fault():
    "The proxy's fault list still names every fault in `FAULTS`."
    tree = ast.parse((HERE / "test_teachers_server.py").read_text(encoding="utf-8"))
    faults = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                  and any(getattr(t, "id", None) == "FAULTS" for t in n.targets))
    assert FAULTS <= set(faults), FAULTS - set(faults)
