"""MkDocs hook: the parts of the docs that must not drift from the code are generated from it.

A page asks for a generated block with a marker line; the hook replaces the marker at build time:

- `<!-- recipe-fields -->`: every recipe section and field, from the dataclasses in
  nmt/config.py: name, type, default and the comment written beside the field;
- `<!-- commands -->`: every `nmt` command with its options, from the Typer app in cli.py;
- `<!-- modules -->`: every module of nmt/ with the first sentence of its docstring;
- `<!-- attention-kinds -->`: every model family and attention kind of nmt/registry.py.

An unknown marker, a field without a comment or a module without a docstring fails the build
(mkdocs build --strict turns this hook's warnings into errors).
"""
from __future__ import annotations

import ast
import dataclasses
import io
import logging
import re
import sys
import tokenize
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("mkdocs.plugins.nmt")
MARKER = re.compile(r"^<!-- ([a-z-]+) -->$", re.M)


def _import_root() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------- recipe fields

def _field_comments(source: str) -> dict[tuple[str, str], str]:
    """(class, field) -> the comment at the end of the field's line, or else the block of
    whole-line comments right above it."""
    trailing: dict[int, str] = {}
    block: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if tok.line[:tok.start[1]].strip():
                trailing[tok.start[0]] = text
            elif not text.startswith("---"):  # a section header (`# --- RNN ---`) names no field
                block[tok.start[0]] = text
    out = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                line = stmt.lineno
                above, k = [], line - 1
                while k in block:
                    above.insert(0, block[k])
                    k -= 1
                out[(node.name, stmt.target.id)] = trailing.get(stmt.end_lineno or line) or \
                    " ".join(above)
    return out


def _type_name(tp) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def recipe_fields() -> str:
    _import_root()
    from nmt import config

    source = (ROOT / "nmt" / "config.py").read_text(encoding="utf-8")
    notes = _field_comments(source)
    lines = []
    for section in dataclasses.fields(config.Recipe):
        cls = typing.get_type_hints(config.Recipe)[section.name]
        if not dataclasses.is_dataclass(cls):
            continue
        lines += [f"## `{section.name}`", "", "| field | type | default | meaning |",
                  "|---|---|---|---|"]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            note = notes.get((cls.__name__, f.name), "")
            if not note:
                log.warning(f"nmt/config.py: {cls.__name__}.{f.name} has no comment to document")
            note = note.replace("|", "\\|")
            lines.append(f"| `{f.name}` | `{_type_name(hints[f.name])}` | `{default!r}` | {note} |")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- commands

def commands() -> str:
    _import_root()
    import click
    import typer.main

    import cli

    group = typer.main.get_command(cli.app)
    out = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            for name in sorted(cmd.commands):
                walk(cmd.commands[name], path + [name])
            return
        out.append(f"## `nmt {' '.join(path)}`")
        out.append("")
        out.append((cmd.help or "").strip())
        out.append("")
        if cmd.epilog:
            out.extend([cmd.epilog.strip(), ""])
        rows = []
        for p in cmd.params:
            if isinstance(p, click.Argument):
                rows.append((p.human_readable_name, "argument", ""))
            elif isinstance(p, click.Option) and not p.hidden:
                names = ", ".join(p.opts + p.secondary_opts)
                rows.append((names, "option", (p.help or "").strip()))
        if rows:
            out.extend(["| argument or option | | meaning |", "|---|---|---|"])
            out.extend(f"| `{n}` | {k} | {h.replace('|', chr(92) + '|')} |" for n, k, h in rows)
            out.append("")
    walk(group, [])
    return "\n".join(out)


# ----------------------------------------------------------------------------- modules

def modules() -> str:
    rows = ["| module | what it is for |", "|---|---|"]
    # the modules of nmt/ and of its subpackages (nmt/compare/: its __init__ describes it)
    files = sorted((ROOT / "nmt").rglob("*.py")) + [ROOT / "cli.py"]
    for path in files:
        if path == ROOT / "nmt" / "__init__.py":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        first = " ".join(doc.split("\n\n")[0].split())
        if not first:
            log.warning(f"{path.relative_to(ROOT)} has no module docstring to document")
        name = str(path.relative_to(ROOT))
        rows.append(f"| `{name}` | {first.replace('|', chr(92) + '|')} |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- attention kinds

def attention_kinds() -> str:
    """The model families and attention kinds of nmt/registry.py, with what builds each."""
    _import_root()
    from nmt import registry

    rows = ["| `model.arch` | model class | what it is |", "|---|---|---|"]
    rows += [f"| `{f.name}` | `{f.model}` | {f.about} |" for f in registry.FAMILIES.values()]
    rows += ["", "| `model.attention` | decoder | score | what it computes |",
             "|---|---|---|---|"]
    for k in registry.ATTENTION_KINDS.values():
        score = (f"`{k.score}`" + (" in a window" if k.local else "")) if k.attends else "-"
        rows.append(f"| `{k.name}` | `{k.decoder}` | {score} | {k.about} |")
    return "\n".join(rows)


GENERATORS = {"recipe-fields": recipe_fields, "commands": commands, "modules": modules,
              "attention-kinds": attention_kinds}


def on_page_markdown(markdown: str, page, config, files) -> str:
    def replace(m: re.Match) -> str:
        gen = GENERATORS.get(m.group(1))
        if gen is None:
            log.warning(f"{page.file.src_path}: unknown generated block {m.group(1)!r}")
            return m.group(0)
        return gen()
    return MARKER.sub(replace, markdown)
