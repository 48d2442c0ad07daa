"""Bad input across the kit: each case asserts the error TYPE, that the message names the problem AND the allowed
values (or the expected form), and, where a backend could be called, that nothing expensive ran (a counting teacher
made zero calls, no model was trained).

Already covered elsewhere (not repeated here): malformed GSM8K/ICoT lines naming file and line, unknown task names and
bad task configs (test_tasks.py); RecordedTeacher's misnamed field, bad line, empty file, nested field and missing
questions (test_teachers.py::test_recorded_field_mapping_and_errors); Teacher.sample's n/seed/max_new_tokens/NaN
temperature and a non-list prompt (test_teachers.py::test_bad_arguments_fail_before_work); construct_cot_dataset's empty
question list, bad selection, repeated/greedy temperatures, length limit (test_dataset.py::test_bad_input_fails_before_sampling);
train()'s missing columns, batch divisibility, mixed precision (test_train.py::test_bad_input); unknown profile
(test_core.py::test_profiles_complete). Each category below adds what those do not check."""
import json, math, os, subprocess, sys, time, warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import pytest
import torch

from cotdistill.core import DataFileError, check_profile, profile_section, read_jsonl
from cotdistill.teachers import RecordedTeacher, Teacher, make_teacher

ROOT = Path(__file__).resolve().parents[1]


class Counting(Teacher):
    "A teacher whose backend counts calls: any call before validation is a bug."
    backend = "counting"
    def __init__(self, **kw): super().__init__("m", progress=False, **kw); self.calls = 0
    def _generate(self, jobs, temperature, seed, max_new_tokens):
        for jb in jobs:
            self.calls += 1
            yield jb, {"text": "1 + 1 = 2 #### 2", "finish_reason": "stop"}


# ---------------------------------------------------------------- files: malformed JSONL, non-UTF-8, empty, fields
def test_read_jsonl_bad_files(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"a": 1}\n{"a": 2,\n{"a": 3}\n')
    with pytest.raises(DataFileError, match=r"d\.jsonl, line 2: malformed JSON"): read_jsonl(p)
    p.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(DataFileError, match=r"line 2: not UTF-8"): read_jsonl(p)
    p.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataFileError, match=r"line 2: expected a JSON object, got list"): read_jsonl(p)
    p.write_text('{"question": "q", "answr": "1"}\n')
    with pytest.raises(DataFileError, match=r"line 1: missing field\(s\) \['answer'\]; the record has \['answr', 'question'\]"):
        read_jsonl(p, required=["question", "answer"])
    with pytest.raises(FileNotFoundError, match="no such file"): read_jsonl(tmp_path / "nope.jsonl")
    p.write_text(""); assert read_jsonl(p) == []     # empty is valid for a log; data loaders reject it (below)


def _gsm8k_dir(tmp_path, train: bytes, test: bytes = None) -> Path:
    good = json.dumps({"question": "q?", "answer": "1 + 1 = <<1+1=2>>2\n#### 2"}).encode() + b"\n"
    (tmp_path / "train.jsonl").write_bytes(train); (tmp_path / "test.jsonl").write_bytes(good if test is None else test)
    return tmp_path


def test_gsm8k_loader_bad_files(tmp_path):
    from cotdistill.tasks import get_task, load_gsm8k
    good = json.dumps({"question": "q?", "answer": "#### 2"}).encode() + b"\n"
    d = _gsm8k_dir(tmp_path, good + b'{"question": "caf\xe9", "answer": "#### 1"}\n')
    with pytest.raises(DataFileError, match=r"train\.jsonl, line 2: not UTF-8"): get_task("gsm8k", data_dir=str(d)).splits()
    d = _gsm8k_dir(tmp_path, good + json.dumps({"Question": "q", "answer": "#### 1"}).encode() + b"\n")   # misnamed field
    with pytest.raises(DataFileError, match=r"line 2: missing field\(s\) \['question'\]; the record has \['Question', 'answer'\]"):
        load_gsm8k(d)
    d = _gsm8k_dir(tmp_path, b"")                                                                          # empty data set
    with pytest.raises(DataFileError, match=r"train\.jsonl: no records"): load_gsm8k(d)


def test_recorded_teacher_non_utf8_and_defaults(tmp_path):
    p = tmp_path / "rec.jsonl"
    p.write_bytes(b'{"question": "a", "completion": "b"}\n{"question": "\xff", "completion": "c"}\n')
    with pytest.raises(DataFileError, match=r"rec\.jsonl, line 2: not UTF-8"): RecordedTeacher(p)
    p.write_text('{"prompt": "a", "output": "b"}\n')                                # default field names do not match
    with pytest.raises(DataFileError, match=r"missing field.*the record has \['output', 'prompt'\]"): RecordedTeacher(p)


# ---------------------------------------------------------------- unknown names
def test_unknown_names_list_the_allowed_ones():
    from cotdistill.grpo import GRPOConfig
    from cotdistill.reproduce import STAGE_NAMES, plan_stages
    from cotdistill.tasks import get_task
    cases = [
        (lambda: check_profile("fast"), ValueError, ["'fast'", "smoke", "course", "quick", "paper", "full"]),
        (lambda: profile_section("quick", "nope"), KeyError, ["'nope'", "known sections"]),
        (lambda: profile_section("quick", "core", nope=1), KeyError, ["'nope'", "allowed"]),
        (lambda: get_task("gsm9k"), KeyError, ["'gsm9k'", "arith", "mult", "gsm8k"]),
        (lambda: make_teacher("vllm", "m"), ValueError, ["'vllm'", "'hf'", "'openai'", "'recorded'"]),
        (lambda: plan_stages(["tasks", "sfft"], ROOT / "nbs"), ValueError, ["'sfft'", "allowed", *STAGE_NAMES]),
        (lambda: GRPOConfig(loss_type="ppo"), ValueError, ["'ppo'", "allowed", "dr_grpo"]),
    ]
    for fn, exc, words in cases:
        with pytest.raises(exc) as e: fn()
        assert all(w in str(e.value) for w in words), (str(e.value), words)


def test_cli_unknown_profile_and_stage_exit_2(capsys):
    "`cotdistill-reproduce` (in process: the same main) exits 2 with the allowed names, before inspecting any notebook."
    from cotdistill.reproduce import main
    t0 = time.time()
    assert main(["--profile", "fast", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'fast'" in err and "quick" in err
    assert main(["--profile", "smoke", "--stages", "sfft", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown stage(s) ['sfft']" in err and "'tasks'" in err
    assert time.time() - t0 < 5


# ---------------------------------------------------------------- parameters out of range
def test_negative_temperature_before_any_call(tmp_path, monkeypatch):
    monkeypatch.setenv("COTDISTILL_CACHE", str(tmp_path / "cache"))
    from cotdistill.dataset import construct_cot_dataset
    from cotdistill.tasks import get_task
    t = Counting(cache_dir=tmp_path)
    for temp in (-0.5, -1e-9, float("inf")):
        with pytest.raises(ValueError) as e: t.sample(["What is 1 + 1?"], temperature=temp)
        assert "temperature" in str(e.value) and ">= 0" in str(e.value) and "finite" in str(e.value)
        with pytest.raises(ValueError) as e:
            construct_cot_dataset(t, ["What is 1 + 1?"], task=get_task("arith"), temperatures=(0.5, temp))
        assert repr(temp) in str(e.value) and ">= 0" in str(e.value)
    assert t.calls == 0


def test_mask_ratio_outside_unit_interval():
    from cotdistill.grpo import structure_aware_mask
    for r in (-0.1, 1.01, 2, float("nan")):
        with pytest.raises(ValueError, match=r"ratio must lie in \[0, 1\], got"): structure_aware_mask("3 + 4 = 7", r, rng=0)
    for r in (0, 1): structure_aware_mask("3 + 4 = 7", r, rng=0)   # the ends are allowed
    with pytest.raises(ValueError, match=r"level='word'; allowed: \['token', 'step'\]"): structure_aware_mask("x", 0.5, level="word")


def test_codi_k_below_one():
    from cotdistill.codi import CODIObjective, codi_generate
    for K in (0, -1, 1.5, "6"):
        with pytest.raises(ValueError, match=r"K \(the number of continuous thoughts\) must be an int >= 1, got"): CODIObjective(16, K=K)
        with pytest.raises(ValueError, match=r"must be an int >= 1"): codi_generate(None, None, None, ["q"], K=K)   # before touching the model
    CODIObjective(16, K=1)


def test_grpo_group_below_two():
    from cotdistill.grpo import GRPOConfig, check_num_generations
    for G in (1, 0, -4, 2.5, True):
        with pytest.raises(ValueError, match=r"G=.* is not allowed.*G >= 2.*allowed: integers 2, 3, 4"): GRPOConfig(num_generations=G)
    assert check_num_generations(2) == 2


def test_student_larger_than_teacher_warns():
    from cotdistill.models import build_tokenizer, check_student_teacher_sizes, make_model
    tok = build_tokenizer(["1 + 1 = 2"])
    small, big = make_model("tiny", tok), make_model("student", tok)
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        assert check_student_teacher_sizes(small, big)[0] < check_student_teacher_sizes(small, big)[1]
    assert not ws                                                # the usual direction: silent
    with pytest.warns(UserWarning, match=r"student has more parameters \([\d,]+\) than its teacher \([\d,]+\).*swapped"):
        check_student_teacher_sizes(big, small)


def test_mismatched_vocabularies_for_token_level_losses():
    from cotdistill.losses import consistency_kl, generalized_jsd_loss
    s, t, y = torch.randn(2, 5, 10), torch.randn(2, 5, 12), torch.randint(0, 10, (2, 5))
    for fn in (consistency_kl, generalized_jsd_loss):
        with pytest.raises(ValueError) as e: fn(s, t, y)
        msg = str(e.value)
        assert "one shared vocabulary" in msg and "10" in msg and "12" in msg and "same tokenizer" in msg, msg
        assert torch.isfinite(fn(s, t, y, vocab=10))              # the documented way out: a shared prefix of ids
        with pytest.raises(ValueError, match=r"vocab=11 exceeds the logits: student 10, teacher 12"): fn(s, t, y, vocab=11)


# ---------------------------------------------------------------- papermill parameters of the wrong type
DECLARED = {"profile": {"default": '"course"', "inferred_type_name": "None"}, "seed": {"default": "0", "inferred_type_name": "None"},
            "lr": {"default": "0.001", "inferred_type_name": "None"}, "use_cache": {"default": "True", "inferred_type_name": "None"}}


@pytest.mark.parametrize("name,value,expected", [("seed", "abc", "int"), ("seed", 1.5, "int"), ("seed", True, "int"),
                                                 ("lr", "fast", "float"), ("profile", 3, "str"), ("use_cache", "yes", "bool")])
def test_check_parameters_wrong_type(name, value, expected):
    from cotdistill.reproduce import check_parameters
    with pytest.raises(TypeError) as e: check_parameters(DECLARED, {name: value}, "05_dataset.ipynb")
    msg = str(e.value)
    assert f"05_dataset.ipynb: parameter {name!r} must be {expected}" in msg and repr(value) in msg and "default" in msg, msg


def test_check_parameters_unknown_and_ok():
    from cotdistill.reproduce import check_parameters
    with pytest.raises(ValueError, match=r"unknown parameter 'sed'; allowed: \['lr', 'profile', 'seed', 'use_cache'\]"):
        check_parameters(DECLARED, {"sed": 1}, "nb")
    check_parameters(DECLARED, {"seed": 3, "lr": 1, "profile": "smoke", "use_cache": False}, "nb")   # an int is a float


def test_cli_grid_wrong_type_exits_2(tmp_path):
    "The real command: a bad --grid value fails the dry run with exit 2 and names notebook, parameter and type."
    exe = Path(sys.executable).with_name("cotdistill-reproduce")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cotdistill.reproduce"]
    r = subprocess.run(cmd + ["--profile", "smoke", "--stages", "core", "--grid", "seed=abc", "--dry-run", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2, (r.stdout, r.stderr[-2000:])
    assert "00_core.ipynb: parameter 'seed' must be int" in r.stderr and "'abc'" in r.stderr, r.stderr[-2000:]
    assert not any(tmp_path.iterdir())                              # nothing was written
