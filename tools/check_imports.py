"""Check the import structure of ``src/kdistill``: no cycles, no reaching into another package's privates.

    python tools/check_imports.py            # prints the problems, exits 1 if there are any

Rules:

1. **No import cycles.** Every ``import``/``from ... import`` in a module counts, at module level or inside a
   function (a function-local import that closes a cycle only hides it), except those under
   ``if TYPE_CHECKING:``. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
   ``pkg``; a package's ``__init__`` is the module ``pkg``, and importing ``a.b.c`` from outside ``a`` is also
   an edge to ``a`` and ``a.b`` (Python runs their ``__init__`` first). Not seen: attribute access to
   private names (``module._name``) and ``importlib.import_module`` strings.
2. **Private names stay in their package.** A module ``kdistill.a._b`` (any dotted component after
   ``kdistill`` that starts with ``_``) belongs to the package above its first private component
   (``kdistill.a``); only modules inside that package may import it. The same holds for a private name
   imported from a module (``from kdistill.a import _x``). ``kdistill._machine`` and its like sit in the root
   package, so every module of kdistill may use them: they are the library's shared internals.

The tests run this script (``tests/test_architecture.py``).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src"


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module under ``root`` by dotted name (packages by their own name)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """``(line, module or None, names)`` of every import outside ``if TYPE_CHECKING:`` blocks; relative
    ``from`` imports as ``("." * level + module)``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                stack.append(ast.Module(body=child.orelse, type_ignores=[]))  # the else branch runs
                continue
            if isinstance(child, ast.Import):
                for a in child.names:
                    yield child.lineno, a.name, ()
            elif isinstance(child, ast.ImportFrom):
                yield child.lineno, "." * child.level + (child.module or ""), tuple(a.name for a in child.names)
            stack.append(child)


def _absolute(name: str, importer: str, is_package: bool) -> str:
    if not name.startswith("."):
        return name
    level = len(name) - len(name.lstrip("."))
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    rest = name[level:]
    return ".".join(base + ([rest] if rest else []))


def _owner(target: str) -> str | None:
    """The package a private module or name belongs to (None: nothing private in ``target``)."""
    parts = target.split(".")
    for i, p in enumerate(parts[1:], start=1):
        if p.startswith("_") and not p.startswith("__"):
            return ".".join(parts[:i])
    return None


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def graph(mods: dict[str, Path], root: Path = ROOT):
    """``(edges: {module: {imported module: first line}}, private-import problems)``."""
    edges: dict[str, dict[str, int]] = {m: {} for m in mods}
    problems = []
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, name, names in _imports(tree):
            target = _absolute(name, mod, is_pkg)
            if not target.startswith("kdistill"):
                continue
            targets = []
            for n in names or ("",):
                sub = f"{target}.{n}" if n else target
                if n and sub in mods:
                    targets.append(sub)
                else:
                    if target in mods:
                        targets.append(target)
                    if n:  # a name from a module: private if the name is
                        owner = _owner(sub) if n.startswith("_") else None
                        if owner and not _inside(mod, owner):
                            problems.append(f"{path.relative_to(root.parent)}:{line}: imports {n} from {target}, "
                                            f"private to {owner}")
            for t in list(targets):  # importing a.b.c runs a/__init__ and a/b/__init__ first
                parts = t.split(".")
                targets += [p for p in (".".join(parts[:i]) for i in range(1, len(parts)))
                            if p in mods and not _inside(mod, p)]
            for t in targets:
                edges[mod].setdefault(t, line)
                owner = _owner(t)
                if owner and not _inside(mod, owner):
                    problems.append(f"{path.relative_to(root.parent)}:{line}: imports {t}, private to {owner} "
                                    f"(use {owner}'s public names)")
    return edges, problems


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or a module importing itself (Tarjan)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        work = [(v, iter(sorted(edges.get(v, {}))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, {})))))
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1 or node in edges.get(node, {}):
                        out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _cycle_path(comp: list[str], edges) -> str:
    """One concrete cycle through the component, with the line of each import."""
    inside = set(comp)
    start = comp[0]
    path, seen = [start], {start}
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:  # breadth-first back to start
        nxt = []
        for v in frontier:
            for w in sorted(edges[v]):
                if w not in inside:
                    continue
                if w == start:
                    chain = [v]
                    while chain[-1] != start:
                        chain.append(prev[chain[-1]])
                    chain.reverse()
                    hops = chain + [start]
                    return " -> ".join(f"{a} (line {edges[a][b]})" for a, b in zip(hops, hops[1:])) + f" -> {start}"
                if w not in seen:
                    seen.add(w)
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return " -> ".join(path)


def check(root: Path = ROOT) -> list[str]:
    mods = modules(root)
    edges, problems = graph(mods, root)
    problems = list(dict.fromkeys(problems))  # one line per problem, in order
    for comp in cycles(edges):
        problems.append(f"import cycle among {', '.join(comp)}: {_cycle_path(comp, edges)}")
    return problems


def main() -> int:
    problems = check()
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s) in {len(modules())} modules" if problems else
          f"imports ok: {len(modules())} modules, no cycles, no private imports across packages")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
