"""The OpenAI-compatible teacher against a REAL `transformers serve` process on 127.0.0.1 (a tiny model saved
locally), a fault-injecting proxy in front of it (429, 500, timeout, dropped connection, truncated JSON), and the
server killed mid-run: bounded retries, a clear error, every finished sample kept and reused on the rerun.

Time budget: the whole module should take well under 90 s (two server starts of ~5-10 s each); every wait
below is bounded.

The faults the teacher client must survive, and the test that injects each:

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
import json, os, signal, socket, subprocess, sys, threading, time, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
import pytest

pytest.importorskip("fastapi", reason="transformers[serving] is not installed")
pytest.importorskip("uvicorn", reason="transformers[serving] is not installed")
import torch

from cotdistill.teachers import OpenAITeacher, TeacherRequestError, TeacherServerError

torch.set_num_threads(1)
from tiny_models import make_tiny_bpe_llama

QS = [f"Question {i}: Alice has {i} apples and buys 3 more. How many apples does she have?" for i in range(12)]


def make_tiny_model(out: Path) -> Path:
    "A tiny random Llama and a byte-level BPE tokenizer with a chat template, saved to `out`."
    return make_tiny_bpe_llama(out, QS, padding_side=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


class Server:
    "A `transformers serve` process on 127.0.0.1 serving one local model; always stopped by `stop()`."
    def __init__(self, model_dir: Path, log: Path):
        self.port = free_port()
        exe = Path(sys.executable).with_name("transformers")
        cmd = [str(exe), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu",
               "--log-level", "warning"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.log = log; self.logf = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if r.status == 200: return
            except OSError: time.sleep(0.2)
        self.stop(); raise RuntimeError(f"transformers serve did not come up in 60 s: {log.read_text()[-2000:]}")

    @property
    def url(self): return f"http://127.0.0.1:{self.port}"

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL); self.proc.wait(10)

    def stop(self):
        try:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try: self.proc.wait(10)
                except subprocess.TimeoutExpired: self.kill()
        finally: self.logf.close()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    s = Server(model_dir, tmp_path_factory.mktemp("log") / "serve.log")
    try: yield s
    finally: s.stop()


def teacher(url, model_dir, tmp_path, **kw):
    kw = {"concurrency": 2, "timeout": 20, "max_retries": 3, "backoff": 0.05, "max_backoff": 0.2, "progress": False,
          "cache_dir": tmp_path / "cache", **kw}
    return OpenAITeacher(str(model_dir), base_url=f"{url}/v1", **kw)


# ---------------------------------------------------------------- the real server
def test_completions_endpoint(server, model_dir, tmp_path):
    t = teacher(server.url, model_dir, tmp_path)
    s = t.sample(QS[:3], temperature=0.7, n=2, max_new_tokens=6)
    assert len(s) == 6 and all(x.backend == "openai" and x.model == str(model_dir) for x in s)
    assert all(x.completion_tokens == 6 and x.finish_reason == "length" and x.prompt_tokens > 5 for x in s)
    assert all(isinstance(x.text, str) and not x.answer_found for x in s)   # a random model states no answer
    s2 = t.sample(QS[:3], temperature=0.7, n=2, max_new_tokens=6)
    assert t.last_stats["generated"] == 0 and [x.text for x in s2] == [x.text for x in s]


def test_chat_endpoint_with_system_message(server, model_dir, tmp_path):
    t = teacher(server.url, model_dir, tmp_path, chat=True, system="You are a careful tutor.")
    s = t.sample(QS[:2], temperature=0.0, n=1, max_new_tokens=5)
    assert len(s) == 2 and all(x.completion_tokens == 5 for x in s)
    assert s[0].prompt_tokens > teacher(server.url, model_dir, tmp_path).sample(QS[:1], max_new_tokens=2)[0].prompt_tokens
    assert t.config()["endpoint"] == "chat/completions"


def test_other_4xx_is_a_clear_error_without_retries(server, model_dir, tmp_path):
    t = OpenAITeacher("no-such-model", base_url=f"{server.url}/v1", cache_dir=tmp_path, max_retries=3, backoff=0.05,
                      progress=False)
    t0 = time.time()
    with pytest.raises(TeacherRequestError, match="HTTP 400") as e:
        t.sample(QS[:1], max_new_tokens=4)
    assert "no-such-model" in str(e.value) and t.n_requests == 1 and time.time() - t0 < 5
    with pytest.raises(TeacherRequestError, match="HTTP 404.*ending in /v1"):
        OpenAITeacher(str(model_dir), base_url=server.url, cache_dir=tmp_path, progress=False).sample(QS[:1], max_new_tokens=2)


# ---------------------------------------------------------------- a fault-injecting proxy in front of it
class FaultProxy:
    "An HTTP proxy on 127.0.0.1 that forwards to `target`, or injects the next fault of `faults` (one per request)."
    def __init__(self, target: str, faults=()):
        self.target, self.faults, self.log, self.lock = target, list(faults), [], threading.Lock()
        proxy = self
        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *a): pass
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with proxy.lock:
                    fault = proxy.faults.pop(0) if proxy.faults else None
                    proxy.log.append(fault or "ok")
                if fault in ("429", "500", "503"):
                    msg = b'{"error": "injected"}'
                    self.send_response(int(fault)); self.send_header("Content-Type", "application/json")
                    if fault == "429": self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", str(len(msg))); self.end_headers(); self.wfile.write(msg); return
                if fault == "drop": self.close_connection = True; self.connection.shutdown(socket.SHUT_RDWR); return
                if fault == "timeout": time.sleep(proxy.sleep_s); self.close_connection = True; return
                req = urllib.request.Request(proxy.target + self.path, data=body, headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=30) as r: status, data = r.status, r.read()
                except urllib.error.HTTPError as e: status, data = e.code, e.read()
                except OSError:   # the server behind is gone: drop the connection
                    self.close_connection = True; self.connection.shutdown(socket.SHUT_RDWR); return
                declared = len(data)
                if fault == "truncate": data = data[: len(data) // 2]; declared = len(data)   # well-formed HTTP, half a JSON
                if fault == "cut": data = data[: len(data) // 2]                              # connection ends mid-body
                self.send_response(status); self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(declared)); self.end_headers(); self.wfile.write(data)
                if fault == "cut": self.close_connection = True
        self.sleep_s = 1.5
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.srv.handle_error = lambda *a: None   # dropped connections are on purpose
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    @property
    def url(self): return f"http://127.0.0.1:{self.srv.server_address[1]}"
    def close(self): self.srv.shutdown(); self.srv.server_close()


@pytest.fixture()
def proxy(server):
    p = FaultProxy(server.url)
    try: yield p
    finally: p.close()


FAULTS = ["429", "500", "timeout", "drop", "truncate", "cut", "503"]


def test_every_fault_is_retried_and_the_run_completes(proxy, model_dir, tmp_path):
    proxy.faults = list(FAULTS)
    t = teacher(proxy.url, model_dir, tmp_path, concurrency=1, timeout=0.75, max_retries=len(FAULTS))
    s = t.sample(QS[:3], temperature=0.5, n=1, max_new_tokens=4)
    assert len(s) == 3 and all(x.completion_tokens == 4 for x in s)
    assert proxy.log == FAULTS + ["ok"] * 3          # each fault cost exactly one retry, nothing more
    assert t.n_requests == len(FAULTS) + 3 and t.n_retries == len(FAULTS)
    # the same samples as without the proxy: the faults changed nothing
    direct = teacher(proxy.target, model_dir, tmp_path / "direct").sample(QS[:3], temperature=0.5, n=1, max_new_tokens=4)
    assert [x.text for x in s] == [x.text for x in direct]


def test_concurrent_faults(proxy, model_dir, tmp_path):
    proxy.faults = FAULTS * 2
    t = teacher(proxy.url, model_dir, tmp_path, concurrency=4, timeout=0.75, max_retries=6)
    s = t.sample(QS[:6], temperature=0.9, n=2, max_new_tokens=3)
    assert len(s) == 12 and len(proxy.log) == 12 + 2 * len(FAULTS)


def test_persistent_failure_gives_bounded_retries_then_a_clear_error(proxy, model_dir, tmp_path):
    proxy.faults = [None, None] + ["500"] * 100   # two requests pass, then the server answers 500 forever
    t = teacher(proxy.url, model_dir, tmp_path, concurrency=1, max_retries=2)
    t0 = time.time()
    with pytest.raises(TeacherServerError, match=r"no valid reply after 3 attempts.*HTTP 500"):
        t.sample(QS[:5], temperature=0.5, n=1, max_new_tokens=3)
    assert len(proxy.log) == 2 + 3 and time.time() - t0 < 10      # bounded: 3 attempts for the failing request
    assert len(t.cache(0.5, 0, 3)) == 2                # the finished two are kept
    proxy.faults = []
    t.sample(QS[:5], temperature=0.5, n=1, max_new_tokens=3)
    assert t.last_stats["generated"] == 3 and t.last_stats["cached"] == 2


# ---------------------------------------------------------------- the server killed mid-run (runs last: it kills the server)
def test_server_killed_mid_run_keeps_finished_samples(server, model_dir, tmp_path):
    t = teacher(server.url, model_dir, tmp_path, concurrency=1, max_retries=2, timeout=5)
    cache_file = t.cache(1.0, 7, 24).file
    killed = threading.Event()
    def killer():   # SIGKILL the server once 4 samples are on disk
        deadline = time.time() + 60
        while time.time() < deadline:
            if cache_file.exists() and cache_file.read_text().count("\n") >= 4:
                server.kill(); killed.set(); return
            time.sleep(0.005)
    th = threading.Thread(target=killer, daemon=True); th.start()
    t0 = time.time()
    with pytest.raises(TeacherServerError, match=r"after 3 attempts.*(connection|refused|Connection)") as e:
        t.sample(QS, temperature=1.0, n=3, seed=7, max_new_tokens=24)
    th.join(5)
    assert killed.is_set() and time.time() - t0 < 60
    assert str(server.port) in str(e.value)                      # the error names the server it gave up on
    kept = len(t.cache(1.0, 7, 24).load())
    assert 4 <= kept < len(QS) * 3
    # a new server (another port: the cache key has the model, not the URL) finishes only the rest
    s2 = Server(model_dir, tmp_path / "serve2.log")
    try:
        t2 = teacher(s2.url, model_dir, tmp_path, concurrency=2)
        s = t2.sample(QS, temperature=1.0, n=3, seed=7, max_new_tokens=24)
    finally: s2.stop()
    assert len(s) == len(QS) * 3 and t2.last_stats["generated"] == len(QS) * 3 - kept
    assert sum(x.cached for x in s) == kept
