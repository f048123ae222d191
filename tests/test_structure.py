"""The package's import graph: imports run one way (no module imports one that imports it back),
and modules of nmt are imported at the top, not inside functions."""
import ast
from pathlib import Path

NMT = Path(__file__).resolve().parents[1] / "nmt"


def nmt_imports(tree: ast.AST) -> set[str]:
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] == "nmt":
            if n.module == "nmt":
                out |= {a.name for a in n.names if (NMT / f"{a.name}.py").is_file()}
            else:
                out.add(n.module.split(".")[1])
        elif isinstance(n, ast.Import):
            out |= {a.name.split(".")[1] for a in n.names if a.name.startswith("nmt.")}
    return out


def test_the_import_graph_has_no_circle():
    graph = {p.stem: nmt_imports(ast.parse(p.read_text())) for p in NMT.glob("*.py")}
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
    for p in NMT.glob("*.py"):
        if p.name == "__init__.py":  # the package's lazy exports: `import nmt` stays light
            continue
        for f in ast.walk(ast.parse(p.read_text())):
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inside += [f"{p.name}:{f.name}" for n in ast.walk(f)
                           if isinstance(n, (ast.Import, ast.ImportFrom)) and nmt_imports(n)]
    assert not inside, f"nmt imported inside functions: {inside}"
