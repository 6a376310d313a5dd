"""The import rules of docs/ARCHITECTURE.md ("Layers"), checked over the package's own import
graph: a layer never reaches up. Imports under `if TYPE_CHECKING:` are types only, not a
dependency, and are left out (the reference names the model file's type that way)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "wgmtp"

# (importer prefix, forbidden imported prefixes): each a dotted module name under wgmtp
RULES = [
    ("wgmtp.kernels", ("wgmtp.models", "wgmtp.reference", "wgmtp.check", "wgmtp.cli")),
    ("wgmtp.gpu", ("wgmtp.models", "wgmtp.reference", "wgmtp.check", "wgmtp.cli", "wgmtp.kernels")),
    ("wgmtp.reference", ("wgmtp.gpu", "wgmtp.kernels", "wgmtp.models", "wgmtp.check", "wgmtp.cli")),
    ("wgmtp.gguf_file", ("wgmtp.gpu", "wgmtp.kernels", "wgmtp.models", "wgmtp.check", "wgmtp.cli")),
    ("wgmtp.gguf_reader", ("wgmtp.gpu", "wgmtp.kernels", "wgmtp.models", "wgmtp.check", "wgmtp.cli")),
    ("wgmtp.models", ("wgmtp.check", "wgmtp.cli", "wgmtp.reference")),
    # the server drives the engine through api/batching only, never the GPU layers directly
    ("wgmtp.server", ("wgmtp.cli", "wgmtp.check", "wgmtp.models", "wgmtp.gpu", "wgmtp.kernels", "wgmtp.reference")),
    # the live view watches generations through the engine's observer (engine.StepEvent), beside the API:
    # it never imports the model, its kernels, the checker or the server
    ("wgmtp.view", ("wgmtp.cli", "wgmtp.server", "wgmtp.check", "wgmtp.models", "wgmtp.kernels", "wgmtp.reference")),
]


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every runtime import in one file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_lines(tree)
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]   # `from . import cli`
    return out


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations() -> list[str]:
    bad: dict[tuple[str, int], str] = {}        # one report per import statement
    for path in sorted(PKG.rglob("*.py")):
        me, where = module_name(path), str(path.relative_to(PKG.parent))
        for line, mod in imports_of(path):
            if not _under(mod, "wgmtp") or (where, line) in bad:
                continue
            for importer, forbidden in RULES:
                if _under(me, importer) and any(_under(mod, f) for f in forbidden):
                    bad[(where, line)] = f"{where}:{line}: {me} imports {mod}"
            if _under(mod, "wgmtp.cli") and not _under(me, "wgmtp.cli"):
                bad[(where, line)] = f"{where}:{line}: {me} imports the CLI ({mod})"
            if _under(mod, "wgmtp.server") and not (_under(me, "wgmtp.server") or _under(me, "wgmtp.cli")):
                bad[(where, line)] = f"{where}:{line}: {me} imports the server ({mod}); only the CLI may"
            if _under(mod, "wgmtp.view") and not (_under(me, "wgmtp.view") or _under(me, "wgmtp.cli")):
                bad[(where, line)] = f"{where}:{line}: {me} imports the live view ({mod}); only the CLI may"
    return sorted(bad.values())


def test_no_layer_reaches_up():
    assert violations() == []


@pytest.mark.parametrize("src,expect", [
    ("from ..check import trace\n", "imports wgmtp.check"),
    ("from ..models.qwen35 import GGUFModel\n", "imports wgmtp.models"),
])
def test_the_rule_check_catches_a_violation(tmp_path, src, expect):
    """The checker itself: a kernel module that imports the checker or a model is reported."""
    global PKG
    pkg = tmp_path / "wgmtp"
    (pkg / "kernels").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "kernels" / "__init__.py").write_text("")
    (pkg / "kernels" / "bad.py").write_text(src + "if TYPE_CHECKING:\n    from ..cli import main\n")
    old, PKG = PKG, pkg
    try:
        found = violations()
    finally:
        PKG = old
    assert len(found) == 1 and expect in found[0], found
