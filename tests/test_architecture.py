"""The package's layering, checked by parsing every module's imports (nothing is imported):

* no module of the core (everything under ``mdlib/`` but ``mdlib/studies/``) imports from
  ``mdlib.studies``;
* no import circle between modules (lazy imports inside functions count too);
* the layers point one way: data -> models / metrics / saliency / diffusion -> augment
  -> train -> runs -> studies (a lower layer never imports a higher one);
* every augmentation method has a file of its own name.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "mdlib"

#: layer of each top-level part of mdlib; a module may import only from its own layer or
#: lower ones (``io``, ``locks``, ``paths``, ``profiles`` are the floor; ``plots`` sits beside runs)
LAYERS = {"paths": 0, "io": 0, "locks": 0, "profiles": 0, "data": 1, "models": 2, "metrics": 2,
          "saliency": 3, "diffusion": 3, "augment": 4, "train": 5, "runs": 6, "plots": 6,
          "sweep": 7, "studies": 8}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of the mdlib modules ``path`` imports (top level and lazy)."""
    name = module_name(path)
    pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "mdlib"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "mdlib":
                continue
            for a in node.names:  # "from pkg import module" imports the module
                sub = f"{mod}.{a.name}"
                out.add(sub if _exists(sub) else mod)
    return out


def _exists(mod: str) -> bool:
    p = ROOT.parent.joinpath(*mod.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(ROOT.rglob("*.py"))}


def test_core_never_imports_a_study():
    bad = {m: sorted(i for i in deps if i.startswith("mdlib.studies"))
           for m, deps in graph().items() if not m.startswith("mdlib.studies")}
    bad = {m: d for m, d in bad.items() if d}
    assert not bad, f"core modules importing a study: {bad}"


def _parent_packages(m: str) -> set[str]:
    parts = m.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_no_import_circle():
    g = graph()
    # a package's __init__ re-exporting its submodules is not a circle: drop edges from a
    # module to the packages that contain it
    g = {m: {d for d in deps if d in g and d != m and d not in _parent_packages(m)}
         for m, deps in g.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(g[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _layer(mod: str) -> int | None:
    parts = mod.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_layers_point_one_way():
    bad = []
    for m, deps in graph().items():
        lm = _layer(m)
        if lm is None:
            continue
        for d in deps:
            ld = _layer(d)
            if ld is not None and ld > lm:
                bad.append(f"{m} (layer {lm}) imports {d} (layer {ld})")
    assert not bad, "\n".join(bad)


def test_every_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert parts <= set(LAYERS), f"parts without a layer in this test: {parts - set(LAYERS)}"


def test_one_file_per_augmentation_method():
    from mdlib import augment
    files = {p.stem for p in (ROOT / "augment").glob("*.py")}
    missing = [m for m in augment.methods() if m not in files]
    assert not missing, f"augmentation methods without a file of their own name: {missing}"
    for m in augment.methods():
        cls = type(augment.get(m)) if m not in ("genmix", "dba", "meddiffusemix") else \
            augment.base._REGISTRY[m]
        assert cls.__module__ == f"mdlib.augment.{m}", (m, cls.__module__)


@pytest.mark.parametrize("pkg", sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()))
def test_every_subpackage_says_what_lives_there(pkg):
    doc = ast.get_docstring(ast.parse((ROOT / pkg / "__init__.py").read_text()))
    assert doc and len(doc.split()) >= 15, f"mdlib/{pkg}/__init__.py needs a docstring"
