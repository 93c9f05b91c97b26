"""No package function over 60 lines, except where a comment says why.

A function (or method) counts from its ``def`` line to its last line, decorators excluded. A longer one
passes only when one of the first 3 lines after its ``def ...:`` line (docstring included) holds a comment
starting with ``# long:`` that says why it is better read whole (e.g. a numerical kernel).
"""

from __future__ import annotations

import ast
import functools
import io
import tokenize
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sidrec", "data", "tokenizer", "seqmodel", "decoding", "train", "eval", "utils", "configs")
MAX_LINES = 60
MARK = "# long:"
MARK_WINDOW = 3  # lines after the def line where the mark may stand
SHOW_LONGEST = 10

@dataclass(frozen=True)
class Function:
    path: str  # relative to the repo root, with forward slashes
    name: str  # qualified: Class.method, outer.inner
    line: int  # the def line
    length: int  # def line to last line, decorators excluded
    marked: bool  # a `# long:` comment in the first lines of the body

    @property
    def key(self) -> str:
        return f"{self.path}:{self.name}"

    def describe(self) -> str:
        return f"{self.path}:{self.line} {self.name} ({self.length} lines)"


def _header_ends(source: str) -> dict[int, int]:
    """For each ``def`` keyword's line, the line of the ``:`` that ends its header (first ``:`` at depth 0)."""
    ends: dict[int, int] = {}
    depth, open_def = 0, None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.string == "def" and open_def is None:
            open_def = tok.start[0]
        elif tok.type == tokenize.OP and tok.string in "([{":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ")]}":
            depth -= 1
        elif tok.type == tokenize.OP and tok.string == ":" and depth == 0 and open_def is not None:
            ends[open_def] = tok.start[0]
            open_def = None
    return ends


def _mark_lines(source: str) -> set[int]:
    """Lines holding a comment that starts with ``# long:``."""
    return {
        tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT and tok.string.startswith(MARK)
    }


def _functions_in(source: str, rel: str) -> list[Function]:
    """Every function and method (nested ones too) of the file ``rel`` holding ``source``."""
    ends, marks = _header_ends(source), _mark_lines(source)
    found: list[Function] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + child.name
                header_end = ends[child.lineno]
                window = range(header_end + 1, header_end + 1 + MARK_WINDOW)
                found.append(Function(path=rel, name=name, line=child.lineno,
                                      length=child.end_lineno - child.lineno + 1,
                                      marked=any(line in marks for line in window)))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename=rel), "")
    return found


@functools.cache
def _all_functions() -> tuple[Function, ...]:
    files = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))
    assert files, f"no package files found under {ROOT}"
    return tuple(f for path in files for f in _functions_in(path.read_text(encoding="utf-8"),
                                                             path.relative_to(ROOT).as_posix()))


def _longest() -> str:
    top = sorted(_all_functions(), key=lambda f: -f.length)[:SHOW_LONGEST]
    return "longest functions:\n" + "\n".join(f"  {f.describe()}" for f in top)


def test_no_function_over_60_lines_without_a_reason():
    too_long = [f for f in _all_functions() if f.length > MAX_LINES and not f.marked]
    assert not too_long, (
        f"{len(too_long)} function(s) over {MAX_LINES} lines; split them into well-named helpers, or put a "
        f"comment starting with {MARK!r} in the first {MARK_WINDOW} lines after the def line saying why it "
        "is better read whole:\n" + "\n".join(f"  {f.describe()}" for f in too_long) + "\n" + _longest()
    )



def test_the_checker_measures_functions_and_finds_the_mark():
    body = "        x = 1\n" * 60
    source = (
        "class A:\n"
        "    @staticmethod\n"
        "    def marked(\n"
        "        x: dict = {'a': 1},\n"
        "    ) -> int:\n"
        '        """Doc."""\n'
        "        # long: a kernel read top to bottom\n"
        + body
        + "def unmarked():\n"
        '        """Doc."""\n'
        "        y = '# long: in a string, not a comment'\n"
        + body
        + "        def inner(): return 1\n"
    )
    found = {f.name: f for f in _functions_in(source, "x.py")}
    assert set(found) == {"A.marked", "unmarked", "unmarked.inner"}
    assert (found["A.marked"].line, found["A.marked"].length, found["A.marked"].marked) == (3, 65, True)
    assert (found["unmarked"].length, found["unmarked"].marked) == (64, False)
    assert found["unmarked.inner"].length == 1
