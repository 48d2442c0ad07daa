"""The notebooks work in JupyterLab: a real server on 127.0.0.1 opens every notebook and starts a kernel.

Starts `python -m jupyterlab` (from this venv) on a free port with a random token, rooted at nbs/, and
talks to it only through its REST API and the kernel websocket. The server always stops: the fixture's
finalizer deletes any kernel left, then kills the server's process group. Every wait is bounded."""
import asyncio, contextlib, json, os, secrets, signal, socket, subprocess, sys, time, urllib.error, urllib.request, uuid
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"
START_TIMEOUT = 30  # seconds for the server to answer
KERNEL_TIMEOUT = 20  # seconds for a kernel to start and run 1+1

pytest.importorskip("jupyterlab")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


class Lab:
    "A JupyterLab server and a tiny REST client for it."
    def __init__(self, port: int, token: str, proc: subprocess.Popen, log: Path):
        self.port, self.token, self.proc, self.log = port, token, proc, log
        self.base = f"http://127.0.0.1:{port}"

    def request(self, method: str, path: str, body=None, timeout: float = 10):
        "(status, parsed JSON or text) for one authenticated request."
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r: status, raw = r.status, r.read()
        except urllib.error.HTTPError as e: status, raw = e.code, e.read()
        try: return status, json.loads(raw) if raw else None
        except ValueError: return status, raw.decode(errors="replace")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@contextlib.contextmanager
def start_lab(root: Path, tmp: Path, extra_args: tuple = (), extra_env: dict | None = None):
    "A JupyterLab server rooted at `root` (its runtime, config and log under `tmp`); always stopped on exit."
    port, token, log = _free_port(), secrets.token_hex(16), tmp / "lab.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
               JUPYTER_CONFIG_DIR=str(tmp / "config"), IPYTHONDIR=str(tmp / "ipython"), JUPYTER_PLATFORM_DIRS="1",
               JUPYTER_TOKEN=token, **(extra_env or {}))  # the token goes by environment, not on the visible command line
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", *extra_args]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    server = Lab(port, token, proc, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None: pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                if server.request("GET", "/api/status", timeout=2)[0] == 200: break
            except (urllib.error.URLError, ConnectionError, socket.timeout): pass
            if time.monotonic() > deadline: pytest.fail(f"jupyter lab did not answer in {START_TIMEOUT} s:\n{server.log_tail()}")
            time.sleep(0.3)
        yield server
    finally:
        try:  # kernels run in their own sessions: shut them down through the server before stopping it
            for k in server.request("GET", "/api/kernels", timeout=3)[1] or []:
                server.request("DELETE", f"/api/kernels/{k['id']}", timeout=5)
        except Exception: pass
        try: os.killpg(proc.pid, signal.SIGTERM)  # the server's process group; SIGTERM also makes it stop its kernels
        except ProcessLookupError: pass
        try: proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(10)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with start_lab(NBS, tmp_path_factory.mktemp("lab")) as server: yield server


def test_lab_serves_the_ui(lab):
    "The JupyterLab page itself is served (not only the bare Jupyter server)."
    status, page = lab.request("GET", "/lab")
    assert status == 200 and "jupyterlab" in str(page).lower(), (status, str(page)[:300])


def test_lab_needs_the_token(lab):
    "Without the token the API refuses (the server is not open to anyone on the machine)."
    try: status = urllib.request.urlopen(lab.base + "/api/contents", timeout=5).status
    except urllib.error.HTTPError as e: status = e.code
    assert status == 403, status


def _notebooks() -> list[str]:
    "Every notebook under nbs/ (the stage notebooks and the solutions/ subfolder), as paths relative to nbs/."
    return sorted(p.relative_to(NBS).as_posix() for p in NBS.rglob("*.ipynb")
                  if not any(part.startswith((".", "_")) for part in p.relative_to(NBS).parts))


def test_every_notebook_opens(lab):
    "GET /api/contents/<path> returns each notebook under nbs/ (solutions/ included) as a notebook with cells."
    names = _notebooks()
    assert "index.ipynb" in names and "00_core.ipynb" in names, names
    if (NBS / "solutions").is_dir(): assert any(n.startswith("solutions/") for n in names), names
    listed = set()
    for folder in sorted({str(Path(n).parent) for n in names}):  # each folder's listing names its notebooks
        path = "" if folder == "." else "/" + urllib.request.quote(folder)
        status, listing = lab.request("GET", f"/api/contents{path}?content=1")
        assert status == 200, (folder, status, listing)
        listed |= {c["path"] for c in listing["content"] if c["type"] == "notebook"}
    assert set(names) <= listed, set(names) - listed
    bad = []
    for name in names:
        status, model = lab.request("GET", f"/api/contents/{urllib.request.quote(name)}?content=1")
        ok = (status == 200 and model["type"] == "notebook" and model["content"]["nbformat"] == 4
              and len(model["content"]["cells"]) > 0)
        if not ok: bad.append(f"{name}: HTTP {status} {str(model)[:200]}")
    assert not bad, "notebooks that do not open in JupyterLab:\n" + "\n".join(bad)


async def _call(ws, msg_type: str, content: dict, deadline: float) -> list[dict]:
    "Send one shell request over the kernel websocket; the messages it caused, up to its reply and idle status."
    msg_id = uuid.uuid4().hex
    await ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": msg_type, "username": "test", "session": uuid.uuid4().hex,
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "content": content, "channel": "shell", "buffers": []}))
    got, replied, idle = [], False, False
    while not (replied and idle):  # the reply (shell) and the kernel back to idle (iopub) may come in either order
        raw = await asyncio.wait_for(ws.read_message(), max(0.1, deadline - time.monotonic()))
        if raw is None: raise ConnectionError("kernel websocket closed")
        if isinstance(raw, bytes): continue  # binary frames: not ours
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != msg_id: continue
        got.append(msg)
        replied |= msg["header"]["msg_type"] == msg_type.replace("_request", "_reply")
        idle |= msg["header"]["msg_type"] == "status" and msg["content"].get("execution_state") == "idle"
    return got


async def _kernel_session(lab, kid: str, timeout: float) -> tuple[str, dict]:
    "Connect to the kernel, wait until it answers and its REST status is idle, run 1+1: (state, result data)."
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect
    deadline = time.monotonic() + timeout
    ws = await asyncio.wait_for(websocket_connect(HTTPRequest(
        f"ws://127.0.0.1:{lab.port}/api/kernels/{kid}/channels", headers={"Authorization": f"token {lab.token}"})), timeout)
    try:
        # the server reports "starting" until a client talks to the kernel: ask it who it is first
        info = await _call(ws, "kernel_info_request", {}, deadline)
        reply = next(m for m in info if m["header"]["msg_type"] == "kernel_info_reply")
        assert reply["content"]["status"] == "ok", reply
        state = None
        while time.monotonic() < deadline:
            state = lab.request("GET", f"/api/kernels/{kid}")[1]["execution_state"]
            if state == "idle": break
            await asyncio.sleep(0.2)
        msgs = await _call(ws, "execute_request", {"code": "1+1", "silent": False, "store_history": False,
                                                   "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}, deadline)
        data = {}
        for m in msgs:
            if m["header"]["msg_type"] == "execute_result": data = m["content"]["data"]
            if m["header"]["msg_type"] == "error": data = {"error": f"{m['content']['ename']}: {m['content']['evalue']}"}
        return state, data
    finally:
        ws.close()


def test_kernel_starts_and_runs(lab):
    "POST /api/kernels starts a python3 kernel that answers, is idle, computes 1+1 = 2, and is deleted."
    status, kernel = lab.request("POST", "/api/kernels", {"name": "python3"}, timeout=KERNEL_TIMEOUT)
    assert status == 201, (status, kernel, lab.log_tail())
    kid = kernel["id"]
    try:
        state, data = asyncio.run(_kernel_session(lab, kid, KERNEL_TIMEOUT))
        assert state == "idle", f"kernel state {state!r} after it answered:\n{lab.log_tail()}"
        assert data.get("text/plain") == "2", data
    finally:
        status, _ = lab.request("DELETE", f"/api/kernels/{kid}", timeout=KERNEL_TIMEOUT)
    assert status == 204, status
    assert kid not in {k["id"] for k in lab.request("GET", "/api/kernels")[1]}
