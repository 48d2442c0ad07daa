"""Teachers: the Hugging Face backend on a tiny local model, recorded outputs on GSM8K, the sample
cache (reuse, resume after an exception and after SIGKILL), bad input, and the API key never leaking."""
import json, os, signal, subprocess, sys, textwrap, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
import pytest
import torch

from cotdistill.core import DataFileError, read_jsonl
from cotdistill.teachers import (HFTeacher, OpenAITeacher, RecordedTeacher, SampleCache, Teacher, TeacherRequestError,
                                 TeacherServerError)

torch.set_num_threads(1)
GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
from tiny_models import make_tiny_bpe_llama

QS = ["Alice has 3 apples and buys 4 more. How many?", "Bob has 10 pens and gives away 3. How many?",
      "Carol has 2 bags of 5 marbles. How many?"]


def make_tiny_model(out: Path, chat_template: bool = True) -> Path:
    "A tiny random Llama and a byte-level BPE tokenizer (with a chat template), saved to `out`."
    return make_tiny_bpe_llama(out, QS * 5, chat_template=chat_template)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


# ---------------------------------------------------------------- Hugging Face backend
def test_hf_teacher_by_path_samples_and_caches(model_dir, tmp_path):
    t = HFTeacher(str(model_dir), device="cpu", cache_dir=tmp_path, batch_size=4, progress=False)
    assert t.name == f"hf:{model_dir}" and t.config()["dtype"] == "float32"
    s = t.sample(QS, temperature=1.0, n=2, seed=3, max_new_tokens=8)
    assert [(x.question_index, x.sample_index) for x in s] == [(i, j) for i in range(3) for j in range(2)]
    assert all(x.backend == "hf" and x.finish_reason in ("stop", "length") and not x.cached for x in s)
    assert all(0 < x.completion_tokens <= 8 and x.prompt_tokens > 5 for x in s)
    assert t.last_stats["generated"] == 6 and t.last_stats["samples_per_s"] > 0
    again = HFTeacher(str(model_dir), device="cpu", cache_dir=tmp_path, progress=False)
    s2 = again.sample(QS, temperature=1.0, n=2, seed=3, max_new_tokens=8)
    assert again.last_stats["generated"] == 0 and all(x.cached for x in s2)
    assert [x.text for x in s2] == [x.text for x in s]
    # another seed, temperature or token limit is another configuration
    again.sample(QS[:1], temperature=1.0, n=2, seed=4, max_new_tokens=8)
    assert again.last_stats["generated"] == 2


def test_hf_teacher_greedy_matches_generate_batched(model_dir, tmp_path):
    from cotdistill.evaluate import generate_batched
    t = HFTeacher(str(model_dir), device="cpu", cache_dir=tmp_path, progress=False)
    s = t.sample(QS, temperature=0.0, n=1, max_new_tokens=6)
    ref = generate_batched(t.hf_model, t.tokenizer, QS, max_new_tokens=6)
    assert [x.text for x in s] == [r["text"] for r in ref]
    with pytest.raises(ValueError, match="temperature 0"):
        t.sample(QS, temperature=0.0, n=2)


def test_hf_teacher_resumes_partial_questions(model_dir, tmp_path):
    t = HFTeacher(str(model_dir), device="cpu", cache_dir=tmp_path, progress=False)
    first = t.sample(QS[:2], temperature=0.8, n=3, max_new_tokens=5)
    full = t.sample(QS, temperature=0.8, n=3, max_new_tokens=5)
    assert t.last_stats == {**t.last_stats, "cached": 6, "generated": 3}
    assert [x.text for x in full[:6]] == [x.text for x in first]
    more = t.sample(QS, temperature=0.8, n=4, max_new_tokens=5)  # a larger n only adds the 4th draws
    assert t.last_stats["generated"] == 3 and [x.text for x in more if x.sample_index < 3] == [x.text for x in full]


def test_hf_teacher_chat_template_and_model_in_memory(model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    m = AutoModelForCausalLM.from_pretrained(model_dir)
    t = HFTeacher(m, tok, name="tiny", chat=True, device="cpu", cache_dir=tmp_path, progress=False)
    s = t.sample(QS[:2], temperature=0.5, n=1, max_new_tokens=4)
    assert s[0].prompt_tokens > len(tok(QS[0])["input_ids"])  # the template added its markup
    fp = t.config()["weights"]
    with torch.no_grad(): next(m.parameters()).add_(1.0)       # trained further: a new cache key
    assert HFTeacher(m, tok, name="tiny", chat=True, device="cpu", cache_dir=tmp_path).config()["weights"] != fp
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        HFTeacher(m, tok, chat=True, device="cpu")
    with pytest.raises(ValueError, match="tokenizer"):
        HFTeacher(m, device="cpu")


# ---------------------------------------------------------------- recorded outputs
def test_recorded_gsm8k_replays_every_answer():
    rec = RecordedTeacher(GSM8K / "test.jsonl", question_field="question", completion_field="answer", progress=False)
    rows = read_jsonl(GSM8K / "test.jsonl")
    s = rec.sample([r["question"] for r in rows])
    assert len(s) == len(rows) == 1319
    assert all(x.answer_found for x in s)
    gold = [r["answer"].rsplit("####", 1)[1].strip().replace(",", "") for r in rows]
    assert [x.answer for x in s] == gold
    assert s[0].rationale.startswith("Janet sells 16 - 3 - 4") and "####" not in s[0].rationale
    assert {x.finish_reason for x in s} == {"recorded"} and s[0].backend == "recorded"


def test_recorded_field_mapping_and_errors(tmp_path):
    p = tmp_path / "out.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [
        {"q": "What is 2+2?", "why": "2 + 2 = 4", "final": "4"},
        {"q": "What is 2+2?", "why": "Two and two make 4", "final": "4"},
        {"q": "What is 3*3?", "why": "3 * 3 = 9", "final": 9}]) + "\n")
    rec = RecordedTeacher(p, question_field="q", completion_field="why", answer_field="final", progress=False)
    s = rec.sample(["What is 2+2?", "  What is 3*3?  "][:1], n=2)
    assert [(x.rationale, x.answer) for x in s] == [("2 + 2 = 4", "4"), ("Two and two make 4", "4")]
    assert rec.sample(["What is 3*3?"])[0].answer == "9"
    with pytest.raises(KeyError, match="fewer than n=2"):
        rec.sample(["What is 3*3?"], n=2)
    with pytest.raises(KeyError, match="1 of 2 questions"):
        rec.sample(["What is 2+2?", "Unknown?"])
    with pytest.raises(DataFileError, match="answer"):
        RecordedTeacher(p, question_field="q", completion_field="answer")   # misnamed field, named in the error
    bad = tmp_path / "bad.jsonl"; bad.write_text('{"q": "a", "why": "b"}\nnot json\n')
    with pytest.raises(DataFileError, match="line 2"):
        RecordedTeacher(bad, question_field="q", completion_field="why")
    empty = tmp_path / "empty.jsonl"; empty.write_text("")
    with pytest.raises(DataFileError, match="no records"):
        RecordedTeacher(empty)
    nested = tmp_path / "nested.jsonl"; nested.write_text('{"q": "a", "why": {"x": 1}}\n')
    with pytest.raises(DataFileError, match="record 1"):
        RecordedTeacher(nested, question_field="q", completion_field="why")


# ---------------------------------------------------------------- cache: resume after an exception and after SIGKILL
class Flaky(Teacher):
    backend = "flaky"
    def __init__(self, crash_at=None, **kw):
        super().__init__("m", progress=False, **kw); self.crash_at, self.calls = crash_at, 0
    def _generate(self, jobs, temperature, seed, max_new_tokens):
        for jb in jobs:
            self.calls += 1
            if self.calls == self.crash_at: raise KeyboardInterrupt
            yield jb, {"text": f"{jb.prompt} -> {jb.sample_index} #### {jb.sample_index}", "finish_reason": "stop"}


def test_cache_resume_after_interrupt(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        Flaky(crash_at=4, cache_dir=tmp_path, chunk_size=2).sample(QS, temperature=0.5, n=2)
    t = Flaky(cache_dir=tmp_path)
    s = t.sample(QS, temperature=0.5, n=2)
    assert t.calls == 3 and [x.cached for x in s] == [True] * 3 + [False] * 3
    assert [x.answer for x in s] == ["0", "1"] * 3
    t2 = Flaky(cache_dir=tmp_path); t2.sample(QS, temperature=0.5, n=2); assert t2.calls == 0
    assert Flaky(cache_dir=tmp_path, use_cache=False).sample(QS, temperature=0.5)[0].cached is False


SLOW_SCRIPT = textwrap.dedent("""
    import sys, time
    from cotdistill.teachers import Teacher
    class Slow(Teacher):
        backend = "slow"
        def _generate(self, jobs, temperature, seed, max_new_tokens):
            for jb in jobs:
                time.sleep(float(sys.argv[2]))
                yield jb, {"text": f"step #### {jb.question_index}", "finish_reason": "stop"}
    t = Slow("m", cache_dir=sys.argv[1], chunk_size=3, progress=False)
    s = t.sample([f"question {i}" for i in range(20)], temperature=1.0, n=1)
    print("generated", t.last_stats["generated"], "answers", sum(x.answer == str(x.question_index) for x in s))
""")


def test_cache_resume_after_sigkill(tmp_path):
    script = tmp_path / "slow.py"; script.write_text(SLOW_SCRIPT)
    cache = tmp_path / "cache"
    p = subprocess.Popen([sys.executable, str(script), str(cache), "0.05"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:   # wait until some samples are on disk, then kill -9
            files = list(cache.glob("teacher_samples-*/samples.jsonl"))
            if files and files[0].read_text().count("\n") >= 5: break
            time.sleep(0.02)
        p.send_signal(signal.SIGKILL); p.wait(10)
    finally:
        if p.poll() is None: p.kill()
    kept = files[0].read_text().count("\n")
    assert 5 <= kept < 20
    out = subprocess.run([sys.executable, str(script), str(cache), "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    n_gen = int(out.stdout.split()[1])
    assert n_gen <= 20 - kept + 1 and out.stdout.split()[3] == "20"   # a torn last line may cost one redo, never more


# ---------------------------------------------------------------- bad input
def test_bad_arguments_fail_before_work(tmp_path):
    t = Flaky(cache_dir=tmp_path)
    for kw, msg in [(dict(temperature=-0.1), "temperature"), (dict(temperature=float("nan")), "temperature"),
                    (dict(n=0), "n \\(completions"), (dict(max_new_tokens=0), "max_new_tokens"), (dict(seed=1.5), "seed")]:
        with pytest.raises(ValueError, match=msg): t.sample(QS, **{"temperature": 0.5, **kw})
    with pytest.raises(TypeError, match="list"): t.sample("one question")
    with pytest.raises(TypeError, match="item 1"): t.sample(["a", 3])
    assert t.calls == 0 and t.sample([]) == []
    afile = tmp_path / "a_file"; afile.write_text("x")
    with pytest.raises(PermissionError, match="cannot be created"):
        Flaky(cache_dir=afile / "cache").sample(QS, temperature=0.5)
    with pytest.raises(ValueError, match="http"): OpenAITeacher("m", base_url="127.0.0.1:8000/v1")
    with pytest.raises(ValueError, match="chat=True"): OpenAITeacher("m", system="be nice")


# ---------------------------------------------------------------- the API key never leaks
SECRET = "sk-test-SECRET-0123456789abcdef"


class Echo(BaseHTTPRequestHandler):
    "A server that echoes the Authorization header back in its replies and error bodies."
    mode = {"v": "ok"}
    seen = []
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        auth = self.headers.get("Authorization", "")
        Echo.seen.append(auth)
        mode = Echo.mode["v"]
        code = {"ok": 200, "400": 400, "500": 500}[mode]
        body = (json.dumps({"choices": [{"text": "2 + 2 = 4. The answer is 4.", "finish_reason": "stop"}]}) if code == 200
                else json.dumps({"error": f"bad token {auth}"}))
        self.send_response(code); self.send_header("Content-Type", "application/json"); self.end_headers()
        self.wfile.write(body.encode())


@pytest.fixture()
def echo_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown(); srv.server_close()


def test_api_key_never_leaks(echo_server, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("MY_TEACHER_KEY", SECRET)
    Echo.seen.clear(); Echo.mode["v"] = "ok"
    t = OpenAITeacher("m", base_url=echo_server, api_key_env="MY_TEACHER_KEY", cache_dir=tmp_path, backoff=0.001,
                      max_retries=1, progress=True)
    s = t.sample(QS, temperature=0.5, n=2)
    assert Echo.seen[0] == f"Bearer {SECRET}"          # the key is sent...
    assert s[0].answer == "4"
    leaks = [json.dumps(t.config()), repr(t), str(vars(t)), json.dumps([x.to_dict() for x in s])]
    leaks += [f.read_text() for f in tmp_path.rglob("*") if f.is_file()]
    Echo.mode["v"] = "400"
    with pytest.raises(TeacherRequestError) as e4: t.sample(["new question"], temperature=0.5)
    Echo.mode["v"] = "500"
    with pytest.raises(TeacherServerError) as e5: t.sample(["another question"], temperature=0.5)
    assert "HTTP 400" in str(e4.value) and "bad token" in str(e4.value) and "***" in str(e4.value)
    assert "after 2 attempts" in str(e5.value) and "HTTP 500" in str(e5.value)
    import traceback
    leaks += [str(e4.value), str(e5.value), "".join(traceback.format_exception(e4.value)),
              "".join(traceback.format_exception(e5.value))]
    cap = capsys.readouterr(); leaks += [cap.out, cap.err, caplog.text]
    assert not [x for x in leaks if SECRET in x or "SECRET-0123" in x]   # ...and nowhere else
    no_key = OpenAITeacher("m", base_url=echo_server, api_key_env=None, cache_dir=tmp_path, progress=False)
    Echo.mode["v"] = "ok"; Echo.seen.clear(); no_key.sample(["q?"], temperature=0.1)
    assert Echo.seen == [""]


def test_make_teacher_and_answer_prefix(tmp_path):
    from cotdistill.teachers import TEACHERS, make_teacher
    with pytest.raises(ValueError, match="unknown teacher backend 'vllm'; known: ") as e:
        make_teacher("vllm", "m")
    assert all(f"'{b}'" in str(e.value) for b in ("hf", "openai", "recorded"))   # 'offline' too once imported
    assert set(TEACHERS) >= {"hf", "openai", "recorded"}

    class Direct(Flaky):   # a direct prompt ends with "The answer is": the completion is just " 7"
        def _generate(self, jobs, temperature, seed, max_new_tokens):
            for jb in jobs: yield jb, {"text": " 7", "finish_reason": "stop"}
    assert Direct(cache_dir=tmp_path).sample(["q"])[0].answer_found is False
    s = Direct(cache_dir=tmp_path, answer_prefix="The answer is").sample(["q"])[0]
    assert (s.answer, s.answer_found, s.cached) == ("7", True, True)   # parsed anew from the cached raw text
