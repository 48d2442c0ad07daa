"""Disk: a cache, report or run directory that cannot be written gets a clear error BEFORE work starts, and a full
disk never leaves a half-written file in place of a good one.

Tests run as root here, where `chmod` blocks nothing; so an uncreatable directory is made by putting it under a
regular file (mkdir fails with ENOTDIR for every user).

| what | where |
|---|---|
| ArtifactCache root under a file | test_core.py::test_unwritable_cache_dir_clear_error (+ $COTDISTILL_CACHE below) |
| teacher sample cache under a file | test_teachers.py::test_bad_arguments_fail_before_work |
| data-set cache ($COTDISTILL_CACHE) under a file, zero teacher calls | test_cache_env_under_a_file_before_sampling |
| `cotdistill-reproduce --out` under a file: exit 2, before any notebook | test_reproduce_out_under_a_file_exits_2 |
| `train(out_dir=...)` under a file: before encoding or a step | test_train_run_dir_under_a_file |
| full disk (RLIMIT_FSIZE) during an atomic write | test_full_disk_keeps_the_old_file |
"""
import json, os, subprocess, sys, textwrap, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def blocker(tmp_path) -> Path:
    f = tmp_path / "a_file"; f.write_text("not a directory")
    return f


def test_cache_env_under_a_file_before_sampling(blocker, monkeypatch):
    from cotdistill.core import ArtifactCache
    from cotdistill.dataset import construct_cot_dataset
    from cotdistill.tasks import get_task
    from cotdistill.teachers import Teacher
    monkeypatch.setenv("COTDISTILL_CACHE", str(blocker / "cache"))
    with pytest.raises(PermissionError, match=r"cache directory .*a_file/cache cannot be created.*COTDISTILL_CACHE"):
        ArtifactCache().get_or_build("x", {}, lambda d: None)

    class Counting(Teacher):
        backend = "counting"
        calls = 0
        def _generate(self, jobs, temperature, seed, max_new_tokens):
            for jb in jobs:
                Counting.calls += 1; yield jb, {"text": "1 + 1 = 2 #### 2"}
    with pytest.raises(PermissionError, match="COTDISTILL_CACHE"):
        construct_cot_dataset(Counting("m", progress=False), ["What is 1 + 1?"], task=get_task("arith"))
    assert Counting.calls == 0


def test_reproduce_out_under_a_file_exits_2(blocker):
    exe = Path(sys.executable).with_name("cotdistill-reproduce")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cotdistill.reproduce"]
    t0 = time.time()
    r = subprocess.run(cmd + ["--profile", "smoke", "--stages", "core", "--out", str(blocker / "reports")],
                       capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2, (r.stdout, r.stderr[-2000:])
    assert "report directory" in r.stderr and "a_file/reports/smoke cannot be created" in r.stderr and "--out" in r.stderr, r.stderr
    assert "notebook run(s)" not in r.stdout                     # failed before planning, so before any notebook ran
    assert time.time() - t0 < 60 and blocker.read_text() == "not a directory"


def test_reproduce_in_process_never_imports_papermill(blocker, capsys):
    "The same check in process: it fails before papermill is even imported (no notebook inspected or run)."
    code = textwrap.dedent(f"""
        import sys
        from cotdistill.reproduce import main
        rc = main(["--profile", "smoke", "--out", {str(blocker / 'r')!r}])
        print(rc, "papermill" in sys.modules)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.stdout.split() == ["2", "False"], (r.stdout, r.stderr[-2000:])


def test_train_run_dir_under_a_file(blocker):
    from cotdistill.models import build_tokenizer, make_model
    from cotdistill.train import TrainConfig, train
    P = [f"Question: {a} + 1?" for a in range(8)]; C = [f" {a} + 1 = {a + 1} #### {a + 1}" for a in range(8)]
    tok = build_tokenizer(P + C)
    calls = []
    def objective(model, batch): calls.append(1); raise AssertionError("training started")
    class NoEncode(dict):
        def keys(self): calls.append("encode"); return super().keys()
    with pytest.raises(PermissionError, match=r"run directory .*a_file/run cannot be created \(Not a directory\); pass out_dir="):
        train(make_model("tiny", tok), NoEncode(prompt=P, completion=C), objective, TrainConfig(max_steps=1, batch_size=4),
              out_dir=blocker / "run", tokenizer=tok)
    assert calls == []                                          # not encoded, not a single step


FULL = textwrap.dedent("""
    import json, resource, signal, sys
    from pathlib import Path
    from cotdistill.core import atomic_write_json
    path = Path(sys.argv[1])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # a write past the limit raises EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))   # the 'disk' holds 100 kB per file
    try: atomic_write_json(path, {"version": 2, "payload": "x" * 1_000_000}); print("no error")
    except OSError as e: print("OSError", e.errno)
""")


def test_full_disk_keeps_the_old_file(tmp_path):
    "A write that runs out of space raises OSError; the previous complete file stays, no temp file is left."
    from cotdistill.core import atomic_write_json
    target = tmp_path / "report.json"
    atomic_write_json(target, {"version": 1, "payload": "ok"})
    r = subprocess.run([sys.executable, "-c", FULL, str(target)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.stdout.split()[0] == "OSError", (r.stdout, r.stderr[-2000:])
    assert json.loads(target.read_text()) == {"version": 1, "payload": "ok"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
