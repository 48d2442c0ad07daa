"""Untrusted text: the package never evaluates, unpickles or shells out with strings it did not write.

A static scan of `cotdistill/**/*.py` (the exported modules) for the calls that can run code hidden in
model output, teacher output or downloaded files. The scan reads the syntax tree, not the text, so a
comment or docstring that says "never eval" is not a hit, and `model.eval()` / `ast.literal_eval` are
told apart from `eval(...)`. A planted file proves the scanner catches every rule, so this test cannot
pass by scanning nothing."""
import ast, os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "cotdistill"
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle"}


def _dotted(node) -> str:
    "`a.b.c` for a Name/Attribute chain, '' for anything else."
    parts = []
    while isinstance(node, ast.Attribute): parts.append(node.attr); node = node.value
    if isinstance(node, ast.Name): parts.append(node.id); return ".".join(reversed(parts))
    return ""


def scan_source(src: str, fname: str = "<string>") -> list[str]:
    "Every dangerous call in `src`, as 'file:line: rule: code' strings (a syntax error is a hit too)."
    try: tree = ast.parse(src, filename=fname)
    except SyntaxError as e: return [f"{fname}:{e.lineno}: cannot parse ({e.msg}), so it cannot be checked"]
    lines, hits = src.splitlines(), []
    def hit(node, rule): hits.append(f"{fname}:{node.lineno}: {rule}: {lines[node.lineno - 1].strip()}")
    aliases = {}  # local name -> 'module.name' for `from X import Y [as Z]`
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for a in node.names: aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            if node.module and node.module.split(".")[0] == "sympy" and any(a.name in ("sympify", "parse_expr") for a in node.names):
                hit(node, "sympy's sympify/parse_expr call eval on text")
    for node in ast.walk(tree):
        if isinstance(node, (ast.Name, ast.Attribute)) and (getattr(node, "id", None) or getattr(node, "attr", None)) in ("sympify", "parse_expr"):
            hit(node, "sympy's sympify/parse_expr call eval on text")
        if not isinstance(node, ast.Call): continue
        name = _dotted(node.func)
        full = aliases.get(name.split(".")[0], name.split(".")[0]) + name[len(name.split(".")[0]):] if name else ""
        last, root = full.rsplit(".", 1)[-1], full.split(".")[0]
        kw = {k.arg: k.value for k in node.keywords}
        if full in ("eval", "exec", "builtins.eval", "builtins.exec", "__builtins__.eval", "__builtins__.exec"):
            hit(node, f"{last}() runs arbitrary code")
        elif root in ("pd", "pandas") and last in ("eval", "query"):
            hit(node, f"pandas {last}() evaluates expression strings")
        elif last == "eval" and (node.args or node.keywords) and root not in ("pd", "pandas"):
            hit(node, "an .eval(expr) with arguments (DataFrame.eval) evaluates expression strings")  # model.eval() has none
        elif root in PICKLE_MODULES and last in ("load", "loads", "Unpickler"):
            hit(node, f"{full}() runs code hidden in the file")
        elif full in ("torch.load",) and not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
            hit(node, "torch.load without weights_only=True unpickles arbitrary objects")
        elif full in ("os.system", "os.popen", "commands.getoutput"):
            hit(node, f"{full}() runs a shell command")
        elif root == "subprocess" and "shell" in kw and not (isinstance(kw["shell"], ast.Constant) and kw["shell"].value is False):
            hit(node, "subprocess with shell=True runs a shell command line")
    return sorted(set(hits), key=lambda h: int(h.split(":")[1]))


def scan_file(path: Path) -> list[str]:
    "Scan one python file; hits name it relative to the repository."
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return scan_source(path.read_text(encoding="utf-8"), str(rel))


MODULES = sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)
# Known hits, reported to their owners; each entry says why it is tolerated for now.
KNOWN: dict[str, str] = {}


def test_package_is_scanned():
    "The scan sees the package: at least core.py, and every module parses."
    names = {p.name for p in MODULES}
    assert "core.py" in names and len(MODULES) >= 3, names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_no_untrusted_evaluation(path, request):
    "No module calls eval/exec/sympify/pd.eval, unpickles, torch.loads unsafely or runs a shell."
    if path.name in KNOWN: request.applymarker(pytest.mark.xfail(reason=KNOWN[path.name], strict=True))
    hits = scan_file(path)
    assert not hits, "untrusted-text hazards:\n" + "\n".join(hits)


PLANTED = '''
import os, pickle, subprocess, torch
import pandas as pd
from sympy import sympify
from sympy.parsing.sympy_parser import parse_expr
from pickle import loads as pl
x = eval(text)
exec(code)
y = pd.eval("a + b")
df.eval("a + b")
obj = pickle.load(f)
obj = pickle.loads(blob)
obj = pl(blob)
sd = torch.load(path)
sd = torch.load(path, weights_only=False)
os.system("ls " + name)
subprocess.run(cmd, shell=True)
subprocess.check_output(cmd, shell=flag)
'''
SAFE = '''
import ast, subprocess, torch
model.eval()  # never eval(text), exec(code), pickle.load or os.system("x") here
v = ast.literal_eval(s)
sd = torch.load(path, weights_only=True, map_location="cpu")
subprocess.run(["ls", "-l"], check=True)
subprocess.run(["ls"], shell=False)
doc = "sympify and parse_expr call eval; pd.eval too"
def evaluate(x): return x
evaluate(1)
'''


def test_scanner_catches_planted(tmp_path):
    "Every rule fires on a planted file (so the package test cannot pass by seeing nothing)."
    f = tmp_path / "planted.py"; f.write_text(PLANTED)
    hits = scan_file(f)
    lines = {int(h.split(":")[1]) for h in hits}
    expected = {i + 1 for i, l in enumerate(PLANTED.splitlines()) if l and not l.startswith(("import", "from pickle"))}
    assert expected <= lines, f"missed lines {sorted(expected - lines)}:\n" + "\n".join(hits)
    for rule in ("eval()", "exec()", "pandas eval", "DataFrame.eval", "pickle.load", "pickle.loads", "torch.load",
                 "os.system", "shell=True", "sympify"):
        assert any(rule in h for h in hits), (rule, hits)
    assert all(h.startswith(f"{f}:") for h in hits)  # every hit names file:line


def test_scanner_allows_safe_code():
    "model.eval(), ast.literal_eval, torch.load(weights_only=True), list-argv subprocess and comments are not hits."
    assert scan_source(SAFE, "safe.py") == []


def test_scanner_reports_unparsable():
    "A file the scanner cannot parse is a hit, not a silent pass."
    assert scan_source("def f(:\n", "bad.py")[0].startswith("bad.py:1:")
