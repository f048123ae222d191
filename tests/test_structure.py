"""The package's import graph: imports run one way (no module imports one that imports it back),
and modules of nmt are imported at the top, not inside functions."""
import ast
from pathlib import Path

NMT = Path(__file__).resolve().parents[1] / "nmt"


def module_name(path: Path) -> str:
    """nmt/compare/runs.py -> compare.runs; a subpackage's __init__.py is the package (compare);
    nmt's own is __init__."""
    parts = path.relative_to(NMT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def _is_module(name: str) -> bool:
    path = NMT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:` (never run: for annotations only)."""
    skip = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            skip |= {id(m) for stmt in n.body for m in ast.walk(stmt)}
    return skip


def nmt_imports(tree: ast.AST, importer: str = "") -> set[str]:
    """The modules of nmt that running `tree` (the module `importer`) imports: each one named
    and the packages above it whose __init__ runs first (but not the importer's own, which is
    being imported already)."""
    named, skip = set(), _type_checking_only(tree)
    for n in ast.walk(tree):
        if id(n) in skip:
            continue
        if isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] == "nmt":
            if n.module == "nmt":
                named |= {a.name for a in n.names if _is_module(a.name)}
            else:
                named.add(n.module.split(".", 1)[1])
        elif isinstance(n, ast.Import):
            named |= {a.name.split(".", 1)[1] for a in n.names if a.name.startswith("nmt.")}
    own = importer.split(".")
    out = set()
    for name in named:
        parts = name.split(".")
        out |= {".".join(parts[:k]) for k in range(1, len(parts) + 1)
                if parts[:k] != own[:k] or k == len(parts)}
    return out - {importer}


def test_the_import_graph_has_no_circle():
    graph = {module_name(p): nmt_imports(ast.parse(p.read_text()), module_name(p))
             for p in NMT.rglob("*.py")}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        for dep in graph.get(module, ()):
            assert dep not in path, f"import circle: {' -> '.join(path + [dep])}"
            if dep not in done:
                visit(dep, path + [dep])
        done.add(module)

    for module in graph:
        visit(module, [module])
    # both families build on seq2seq; build_model (model.py) imports both
    assert "seq2seq" in graph["transformer"] and {"seq2seq", "transformer"} <= graph["model"]


def test_nmt_modules_are_imported_at_the_top():
    inside = []
    for p in NMT.rglob("*.py"):
        if p == NMT / "__init__.py":  # the package's lazy exports: `import nmt` stays light
            continue
        for f in ast.walk(ast.parse(p.read_text())):
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inside += [f"{p.name}:{f.name}" for n in ast.walk(f)
                           if isinstance(n, (ast.Import, ast.ImportFrom)) and nmt_imports(n)]
    assert not inside, f"nmt imported inside functions: {inside}"
