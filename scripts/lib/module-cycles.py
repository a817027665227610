#!/usr/bin/env python3
"""Lists import cycles between the modules of vmm/src (exit 1 if any).

A module is a file; `use crate::a::b` and `super::b` make an edge to the file of
the deepest module named. Cycles are strongly connected components of size > 1.
"""
import os, re, sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../../vmm/src")
mods = {}
for dirpath, _, files in os.walk(root):
    for f in files:
        if f.endswith(".rs") and "bin" not in os.path.relpath(dirpath, root).split(os.sep) and f != "main.rs":
            rel = os.path.relpath(os.path.join(dirpath, f), root)[:-3]
            parts = [p for p in rel.split(os.sep) if p not in ("mod", "lib")]
            mods["::".join(parts)] = os.path.join(dirpath, f)

def resolve(path):
    parts = path.split("::")
    while parts:
        name = "::".join(parts)
        if name in mods:
            return name
        parts.pop()
    return None

edges = {m: set() for m in mods}
for m, f in mods.items():
    src = open(f).read()
    src = src.split("#[cfg(test)]")[0]
    # Doc comments link to modules without importing them.
    src = "\n".join(l for l in src.splitlines() if not l.lstrip().startswith("//"))
    me = m.split("::") if m else []
    for u in re.findall(r"(?:use\s+|\b)(crate(?:::\w+)+|super(?:::\w+)+)", src):
        if u.startswith("crate::"):
            target = resolve(u[len("crate::"):])
        else:
            # `super` is the parent of this file's module.
            target = resolve("::".join(me[:-1] + u.split("::")[1:]))
        # A module using its own parent's items (mod.rs) is not a cycle of files.
        if target is not None and target != m and not m.startswith(target + "::") and target != "":
            edges[m].add(target)

# Tarjan
index, low, stack, on, sccs, i = {}, {}, [], set(), [], [0]
def strong(v):
    index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in edges:
    if v not in index: strong(v)
for c in sccs:
    print("cycle:", " <-> ".join(c))
print(f"{len(mods)} modules, {sum(len(e) for e in edges.values())} imports, {len(sccs)} cycles")
sys.exit(1 if sccs else 0)
