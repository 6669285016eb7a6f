"""The layout at a glance: lines of Python per layer (and per engine package), the largest
modules, and a limit on the engine's modules.

    python3 scripts/layout.py [--root DIR]

Exits 1 when a module of the engine (pgpitr/) is longer than LIMIT lines and is not one of the
EXCEPTIONS below, or when an exception is no longer needed (so the list only shrinks).  `make
test` runs it before the suite.  Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: Lines an engine module may have: past it, a module holds more than one thing to understand.
LIMIT = 450

#: Engine modules allowed to be longer, each with why (none since issue 22 split the last); an
#: entry goes as soon as its module is back within the limit.
EXCEPTIONS: dict[str, str] = {}

#: The layers, top first (pyproject.toml's import contract), then what is not shipped.
LAYERS = ("cli", "deployments", "flows", "tasks", "pgpitr", "tests", "bench", "scripts")
LARGEST = 15


def lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def modules(root: Path, top: str) -> dict[str, int]:
    """Each module under TOP, by its path from ROOT, with its length in lines."""
    return {
        str(path.relative_to(root)): lines(path)
        for path in sorted((root / top).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def report(root: Path) -> tuple[list[str], list[str]]:
    """What to print, and what is wrong."""
    sizes: dict[str, int] = {}
    out = ["lines of Python per layer:"]
    for layer in LAYERS:
        found = modules(root, layer)
        sizes.update(found)
        out.append(f"  {layer:<24} {sum(found.values()):>6}  ({len(found)} modules)")
        if layer == "pgpitr":
            packages: dict[str, list[int]] = {}
            for module, n in found.items():
                parts = Path(module).parts
                package = "/".join(parts[:2]) if len(parts) > 2 else "pgpitr (core modules)"
                packages.setdefault(package, []).append(n)
            for package, counts in sorted(packages.items()):
                out.append(f"    {package:<22} {sum(counts):>6}  ({len(counts)} modules)")
    out += ["", f"the {LARGEST} largest modules:"]
    largest = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))[:LARGEST]
    out += [f"  {n:>6}  {module}" for module, n in largest]

    engine = {m: n for m, n in sizes.items() if m.startswith("pgpitr/")}
    problems = [
        f"{module}: {n} lines, more than {LIMIT}: split it (or, for a reason, list it in "
        f"scripts/layout.py EXCEPTIONS)"
        for module, n in sorted(engine.items())
        if n > LIMIT and module not in EXCEPTIONS
    ]
    problems += [
        f"{module} is listed in scripts/layout.py EXCEPTIONS but "
        + (f"has {engine[module]} lines, within {LIMIT}" if module in engine else "is gone")
        + ": remove its entry"
        for module in EXCEPTIONS
        if engine.get(module, 0) <= LIMIT
    ]
    over = [m for m in EXCEPTIONS if engine.get(m, 0) > LIMIT]
    if over:
        out += ["", f"engine modules over {LIMIT} lines, known (scripts/layout.py EXCEPTIONS):"]
        out += [f"  {engine[m]:>6}  {m}: {EXCEPTIONS[m]}" for m in over]
    return out, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/layout.py")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args(argv)
    out, problems = report(args.root)
    print("\n".join(out))
    for problem in problems:
        print(f"layout: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
