#!/usr/bin/env python3
"""Fails on any cycle between the modules of src/ (docs/ARCHITECTURE.md, "Module map").

A module is a file or folder directly under src/ (`delta.rs`, `publish/`), and, inside a folder,
each file beside `mod.rs`. An edge A -> B is a path `crate::B` (or `super::B` between the files of
a folder) in A's code outside its `#[cfg(test)] mod tests`. With `-v`, prints the module map in
dependency order (docs/ARCHITECTURE.md, "Module map").
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
ROOTS = {"main", "lib"}


def top_modules():
    mods = {}
    for name in sorted(os.listdir(SRC)):
        path = os.path.join(SRC, name)
        if os.path.isdir(path):
            files = []
            for dirpath, _, fs in os.walk(path):
                files += [os.path.join(dirpath, f) for f in fs if f.endswith(".rs")]
            mods[name] = files
        elif name.endswith(".rs") and name[:-3] not in ROOTS:
            mods[name[:-3]] = [path]
    return mods


def strip_comments(text):
    """The code without comments and without its `#[cfg(test)]` module (tests may use any
    module: they are not part of the dependency structure)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    cut = text.find("#[cfg(test)]\nmod tests")
    return text if cut < 0 else text[:cut]


def crate_refs(text):
    refs = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
    # `use crate::{a, b::c}`
    for group in re.findall(r"\bcrate::\{([^}]*)\}", text, flags=re.S):
        refs.update(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
    return refs


def find_cycle(graph):
    """A cycle as a list of nodes, or None (iterative DFS, white/grey/black)."""
    colour = {n: 0 for n in graph}
    for start in sorted(graph):
        if colour[start]:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        colour[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
                continue
            if nxt not in colour:
                continue
            if colour[nxt] == 1:
                return path[path.index(nxt):] + [nxt]
            if colour[nxt] == 0:
                colour[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(sorted(graph[nxt]))))
    return None


def layers(graph):
    """Modules in dependency order: each line depends only on lines above it."""
    done, out = set(), []
    while len(done) < len(graph):
        layer = sorted(n for n in graph if n not in done and graph[n] <= done)
        if not layer:
            break
        out.append(layer)
        done.update(layer)
    return out


def main():
    mods = top_modules()
    graph = {}
    for mod, files in mods.items():
        refs = set()
        for f in files:
            refs |= crate_refs(strip_comments(open(f, encoding="utf-8").read()))
        graph[mod] = {r for r in refs if r in mods and r != mod}
    failed = False
    cycle = find_cycle(graph)
    if cycle:
        print("module cycle in src/: " + " -> ".join(cycle), file=sys.stderr)
        failed = True
    # Inside each folder: the files beside mod.rs (mod.rs is the folder's face and may use them).
    for mod, files in mods.items():
        folder = os.path.join(SRC, mod)
        if not os.path.isdir(folder):
            continue
        subs = {os.path.splitext(os.path.basename(f))[0]: f for f in files
                if os.path.dirname(f) == folder and not f.endswith("mod.rs")}
        for d in os.listdir(folder):
            if os.path.isdir(os.path.join(folder, d)):
                subs[d] = os.path.join(folder, d, "mod.rs")
        sub_graph = {}
        for s, f in subs.items():
            text = strip_comments(open(f, encoding="utf-8").read()) if os.path.exists(f) else ""
            refs = set(re.findall(r"\bsuper::([a-z_][a-z0-9_]*)", text))
            refs |= set(re.findall(rf"\bcrate::{mod}::([a-z_][a-z0-9_]*)", text))
            sub_graph[s] = {r for r in refs if r in subs and r != s}
        cycle = find_cycle(sub_graph)
        if cycle:
            print(f"module cycle in src/{mod}/: " + " -> ".join(cycle), file=sys.stderr)
            failed = True
    if failed:
        return 1
    if "-v" in sys.argv:
        for i, layer in enumerate(layers(graph)):
            print(f"{i}: " + ", ".join(f"{n} ({', '.join(sorted(graph[n])) or '-'})" for n in layer))
    print("no module cycles in src/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
