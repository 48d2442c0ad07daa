"""Core promises that need real processes: a JSONL append killed mid-line, two builders racing on one cache key."""
import json, os, signal, subprocess, sys, textwrap, time, warnings
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from cotdistill.core import (ArtifactCache, JsonlWriter, read_jsonl, atomic_write_json, profile_section, profiles_table, PROFILES,
                             PROFILE_NAMES, STAGE_CONFIGS)

PY = sys.executable


def test_jsonl_append_killed_mid_line(tmp_path):
    "A writer SIGKILLed while writing a huge record leaves a file that reads back every complete record."
    path = tmp_path / "log.jsonl"
    code = textwrap.dedent(f"""
        import sys, os
        from cotdistill.core import JsonlWriter
        w = JsonlWriter({str(path)!r})
        for i in range(50): w.write({{"i": i, "x": "a" * 100}})
        print("ready", flush=True)
        # one enormous record written in many small chunks: the kill lands in the middle of it
        w.f.write('{{"i": 50, "x": "')
        while True:
            w.f.write("b" * 4096); w.f.flush()
    """)
    p = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    while path.stat().st_size < 200_000: time.sleep(0.01)
    p.send_signal(signal.SIGKILL); p.wait(10)
    assert not path.read_bytes().endswith(b"\n")          # the last line really is torn
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        recs = read_jsonl(path)
    assert [r["i"] for r in recs] == list(range(50))
    assert any("torn" in str(w.message) for w in ws)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with JsonlWriter(path) as w: w.write({"i": 50})   # a resumed writer appends cleanly
    assert [r["i"] for r in read_jsonl(path)] == list(range(51))


def test_two_processes_build_same_key(tmp_path):
    "Two processes asking for one cache key at once: one builds, both get the same valid artifact."
    code = textwrap.dedent(f"""
        import json, os, sys, time
        from cotdistill.core import ArtifactCache
        def build(d):
            (d / "builder.txt").write_text(str(os.getpid()))
            time.sleep(1.0)                       # long enough for the other process to arrive
            (d / "weights.bin").write_bytes(b"x" * 1000)
        p = ArtifactCache({str(tmp_path / 'cache')!r}).get_or_build("teacher", {{"width": 8}}, build)
        print(json.dumps({{"path": str(p), "me": os.getpid(), "builder": (p / "builder.txt").read_text()}}))
    """)
    procs = [subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0]["path"] == outs[1]["path"]
    assert outs[0]["builder"] == outs[1]["builder"]       # built once
    art = Path(outs[0]["path"])
    assert (art / "_meta.json").exists() and (art / "weights.bin").stat().st_size == 1000
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert [e for e in entries if not e.endswith(".lock")] == [art.name]   # no partial left


def test_killed_builder_never_returns_partial(tmp_path):
    "A builder killed mid-build leaves no artifact; the next build resumes from its partial directory."
    root = tmp_path / "cache"
    code = textwrap.dedent(f"""
        import time
        from cotdistill.core import ArtifactCache, JsonlWriter
        def build(d):
            with JsonlWriter(d / "rows.jsonl") as w:
                for i in range(1000):
                    w.write({{"i": i}}); print(i, flush=True); time.sleep(0.01)
        ArtifactCache({str(root)!r}).get_or_build("rows", {{"n": 1000}}, build)
    """)
    p = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    for _ in range(5): p.stdout.readline()
    p.send_signal(signal.SIGKILL); p.wait(10)
    cache = ArtifactCache(root)
    assert cache.get("rows", {"n": 1000}) is None
    seen = []
    def resume(d):
        done = {r["i"] for r in read_jsonl(d / "rows.jsonl")}
        seen.append(len(done))
        with JsonlWriter(d / "rows.jsonl") as w:
            for i in range(1000):
                if i not in done: w.write({"i": i})
    art = cache.get_or_build("rows", {"n": 1000}, resume)
    assert seen[0] >= 5                                    # finished work was kept
    assert sorted(r["i"] for r in read_jsonl(art / "rows.jsonl")) == list(range(1000))


def test_unwritable_cache_dir_clear_error(tmp_path):
    "A cache root that cannot be created (its parent is a file: fails even for root) gets a clear error before work."
    blocker = tmp_path / "file"; blocker.write_text("not a directory")
    built = []
    with pytest.raises(PermissionError, match="COTDISTILL_CACHE"):
        ArtifactCache(blocker / "cache").get_or_build("x", {}, lambda d: built.append(1))
    assert built == []


def test_profiles_complete():
    "Every profile builds every stage's typed config: a stage runs under every profile, and no profile holds an unknown key."
    for name in PROFILE_NAMES:
        for s in STAGE_CONFIGS: assert isinstance(profile_section(name, s), STAGE_CONFIGS[s])
    with pytest.raises(ValueError, match="allowed"): profile_section("fast", "core")


def test_a_profile_is_its_differences_from_the_course_defaults():
    "The course profile is the configs' defaults; every other profile only lists values that differ from them."
    assert PROFILES["course"] == {}
    for name, sections in PROFILES.items():
        for s, diff in sections.items():
            default = STAGE_CONFIGS[s]()
            same = [k for k, v in diff.items() if default[k] == v]
            assert not same, f"profile {name!r}, section {s!r} restates default(s) {same}"


@pytest.mark.parametrize("section,bad,allowed", [("sft", "max_step", "allowed: ['max_steps', 'method_steps'"),
                                                  ("progressive", "stage1_stpes", "allowed: ['mask_ratio', 'mask_level'")])
def test_mistyped_override_fails_naming_the_allowed_keys(section, bad, allowed):
    with pytest.raises(KeyError) as e: profile_section("quick", section, **{bad: 3})
    assert f"['{bad}']" in str(e.value) and allowed in str(e.value)


def test_mistyped_key_in_a_profile_fails_before_any_work(monkeypatch):
    monkeypatch.setitem(PROFILES, "quick", {**PROFILES["quick"], "sft": {**PROFILES["quick"]["sft"], "lr_peak": 1e-3}})
    with pytest.raises(KeyError, match=r"profile 'quick', section 'sft' has no parameter\(s\) \['lr_peak'\]; allowed: \['max_steps'"):
        profile_section("quick", "sft")


def test_budgets_are_steps_outside_the_course_profile():
    "Quick and paper never obey a wall clock: no time budget, no time-based schedule, in any section."
    for name in ("smoke", "quick", "paper", "real", "full"):
        for s in (["real"] if name == "real" else STAGE_CONFIGS):   # the real profile runs only its own stage (15_real)
            cfg = profile_section(name, s)
            for k in ("time_budget_s", "compare_budget_s"):
                if k in cfg.keys(): assert cfg[k] is None, (name, s, k)
            if "schedule" in cfg.keys(): assert cfg["schedule"] == "steps", (name, s)


def test_config_reads_like_a_mapping_and_rejects_unknown_names():
    c = profile_section("quick", "sft")
    assert c["lr"] == c.lr and dict(**c)["batch_size"] == 64 and c.replace(lr=1e-4).lr == 1e-4
    with pytest.raises(KeyError, match="no field 'lrr'; allowed"): c["lrr"]
    with pytest.raises(TypeError, match="allowed"): c.replace(lrr=1)
    assert "| `method_steps` |" in profiles_table("sft") and "**2766**" in profiles_table("sft")
