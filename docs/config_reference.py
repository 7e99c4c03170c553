"""The README's config reference, generated from the config dataclasses.

    .venv/bin/python docs/config_reference.py           # rewrite README.md's reference
    .venv/bin/python docs/config_reference.py --check   # exit 1 if README.md is stale
    .venv/bin/python docs/config_reference.py --print   # the markdown, to stdout

Every key of a run config: the sections of ``raygan.platform.core.config`` (``RunConfigSpec``
and its ``data``, ``optim``, ``train``, ``ray``, ``mlflow``, ``storage``), then each
registered family's ``model`` and ``loss`` sections (its ``ModelConfig`` / ``LossConfig``),
then the Serve application's ``args`` (``raygan.deploy.settings.ServeSettings``, read from the
source so that Ray Serve is not imported). A key's default is the dataclass default (a
family's YAML may set another one); its meaning is the ``#:`` comment lines above the field
and the ``#`` comment at its end. The output depends on the code only, so running the
script twice changes nothing; ``tests/test_readme.py`` runs ``--check``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import sys
import tokenize
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"

#: one line per section of the run config (a new section without a line falls back to its
#: class docstring)
SECTION_NOTES = {
    "data": "shards, the degradation task, patches and batches",
    "optim": "optimisers and learning-rate schedules",
    "train": "length, pretraining, EMA, precision, validation, pretrained weights",
    "ray": "Ray Train: workers, resources, checkpoint storage, restarts",
    "mlflow": "tracking and the model registry",
    "storage": "S3 access, retries and the outage budget",
}


# ----------------------------------------------------------------------------- source comments


@lru_cache(maxsize=None)
def _parsed(path: str) -> Tuple[ast.Module, Dict[int, str], List[str]]:
    text = Path(path).read_text()
    comments: Dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string
    return ast.parse(text), comments, text.splitlines()


def _class_node(path: str, name: str) -> Optional[ast.ClassDef]:
    tree, _, _ = _parsed(path)
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name]
    return nodes[0] if nodes else None


def _clean(comment: str) -> str:
    return comment.lstrip("#").lstrip(":").strip()


def field_docs(path: str, class_name: str) -> Dict[str, Tuple[str, Optional[str]]]:
    """``{field: (meaning, default source)}`` of a dataclass in ``path``: the ``#:`` lines
    right above each field and the ``#`` comment on its line(s), joined."""
    node = _class_node(path, class_name)
    if node is None:
        return {}
    _, comments, lines = _parsed(path)
    out: Dict[str, Tuple[str, Optional[str]]] = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        above: List[str] = []
        line = stmt.lineno - 1
        while line >= 1 and lines[line - 1].strip().startswith("#:"):
            above.insert(0, _clean(lines[line - 1].strip()))
            line -= 1
        trailing = [_clean(comments[n]) for n in range(stmt.lineno, stmt.end_lineno + 1)
                    if n in comments and not lines[n - 1].strip().startswith("#")]
        meaning = " ".join(part for part in above + trailing if part)
        default = ast.get_source_segment("\n".join(lines), stmt.value) if stmt.value else None
        out[stmt.target.id] = (meaning, default)
    return out


def dataclass_docs(cls: type) -> Dict[str, str]:
    """``{field: meaning}`` for a dataclass, fields of base dataclasses included."""
    docs: Dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            path = inspect.getsourcefile(klass)
        except TypeError:
            continue
        if path:
            docs.update({k: v for k, (v, _) in field_docs(path, klass.__name__).items()})
    return docs


# ------------------------------------------------------------------------------- rendering


def fmt_default(value: Any) -> str:
    """A default as it is written in YAML or a ``key=value`` override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt_default(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else "{" + ", ".join(f"{k}: {fmt_default(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        text = repr(value)
        return text if ("e" in text or len(text) <= 8) else f"{value:g}"
    return str(value)


def _cell(text: str) -> str:
    """Table-cell text: ``|`` escaped, ``<``/``>`` as entities (not taken for HTML tags)."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("|", "\\|").replace("\n", " "))


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


#: keys rendered without a meaning (no comment in the source): reported on stderr
UNDOCUMENTED: List[str] = []


def table(rows: List[Tuple[str, str, str]]) -> List[str]:
    UNDOCUMENTED.extend(k for k, _, m in rows if not m)
    out = ["| key | default | meaning |", "|---|---|---|"]
    out += [f"| `{k}` | `{_cell(d)}` | {_cell(m) or '—'} |" for k, d, m in rows]
    return out


def section_rows(cls: type, prefix: str) -> List[Tuple[str, str, str]]:
    docs = dataclass_docs(cls)
    rows = []
    for f in dataclasses.fields(cls):
        value = _default_of(f)
        if dataclasses.is_dataclass(value) or f.name in ("model", "loss"):
            continue  # a section of its own
        rows.append((f"{prefix}{f.name}", fmt_default(value), docs.get(f.name, "")))
    return rows


def _constant(node: ast.AST) -> Any:
    """A literal, or arithmetic on literals (``100 * 1024 * 1024``); ValueError otherwise."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Add, ast.Sub, ast.Pow)):
        left, right = _constant(node.left), _constant(node.right)
        ops = {ast.Mult: lambda a, b: a * b, ast.Add: lambda a, b: a + b,
               ast.Sub: lambda a, b: a - b, ast.Pow: lambda a, b: a ** b}
        return ops[type(node.op)](left, right)
    return ast.literal_eval(node)


def serve_rows() -> List[Tuple[str, str, str]]:
    """``args`` of the Serve application, from deploy/settings.py's source (no Ray import)."""
    path = str(ROOT / "deploy" / "settings.py")
    rows = []
    for name, (meaning, default) in field_docs(path, "ServeSettings").items():
        if default and default.startswith("field("):
            default = "{}" if "dict" in default else default
        if default is not None:
            try:
                default = fmt_default(_constant(ast.parse(default, mode="eval").body))
            except (ValueError, SyntaxError):
                default = default.replace("None", "null")
        rows.append((name, default or "", meaning))
    return rows


def render() -> str:
    import raygan.datasets.tasks  # noqa: F401  (fills TASKS)
    import raygan.models  # noqa: F401  (fills FAMILIES)
    from raygan.platform.core.config import RunConfigSpec
    from raygan.platform.core.registry import FAMILIES

    lines = ["<!-- generated by docs/config_reference.py from the config dataclasses; "
             "edit their comments, then rerun it -->", ""]
    top = RunConfigSpec()
    lines += ["#### top level", ""]
    lines += table(section_rows(RunConfigSpec, "")) + [""]
    for f in dataclasses.fields(RunConfigSpec):
        value = getattr(top, f.name)
        if not dataclasses.is_dataclass(value):
            continue
        cls = type(value)
        note = SECTION_NOTES.get(f.name) or (inspect.getdoc(cls) or "").split("\n")[0]
        lines += [f"#### `{f.name}` ({note})" if note else f"#### `{f.name}`", ""]
        lines += table(section_rows(cls, f"{f.name}.")) + [""]
    for name in FAMILIES:
        family = FAMILIES.get(name)
        # the file named from the module, so that an installed raygan renders the same text
        where = family.__module__.replace("raygan.", "", 1).replace(".", "/") + ".py"
        lines += [f"#### `model` and `loss` of `{name}` ({where}; default config "
                  f"`{family.default_config}`, data task `{family.task}`)", ""]
        rows = []
        for section, cls in (("model", family.ModelConfig), ("loss", family.LossConfig)):
            if dataclasses.is_dataclass(cls):
                rows += section_rows(cls, f"{section}.")
        lines += table(rows) + [""]
    lines += ["#### Serve application `args` (`deploy/serve_config.yaml`; `deploy/settings.py` "
              "`ServeSettings`)", ""]
    lines += table(serve_rows())
    return "\n".join(lines) + "\n"


def splice(readme: str, body: str) -> str:
    """``readme`` with ``body`` between the markers (ValueError if they are missing)."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no '{START}' ... '{END}' markers")
    return readme[:start + len(START)] + "\n" + body + readme[end:]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    mode.add_argument("--print", action="store_true", help="print the reference, change nothing")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    UNDOCUMENTED.clear()
    body = render()
    if UNDOCUMENTED:
        print(f"note: no comment to explain {', '.join(UNDOCUMENTED)} (add a '#:' line above "
              "the field or a '#' comment after it)", file=sys.stderr)
    if args.print:
        sys.stdout.write(body)
        return 0
    text = args.readme.read_text()
    try:
        new = splice(text, body)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if new != text:
            print(f"{args.readme}: the config reference is stale; run "
                  f"python docs/config_reference.py", file=sys.stderr)
            return 1
        print(f"{args.readme}: the config reference is up to date")
        return 0
    if new != text:
        args.readme.write_text(new)
        print(f"{args.readme}: config reference rewritten")
    else:
        print(f"{args.readme}: config reference already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
