#!/usr/bin/env python3
"""Module import cycles in src/: every `crate::a::b` and `super::x` path a module names (outside
its #[cfg(test)] modules) is an edge to the module that path lands in; strongly connected
components of more than one module are printed. Exit 1 when there is a cycle. Used by
tests/layout.rs (issue #11: no import cycles)."""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else 'src'
mods = {}
for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        p = os.path.join(dp, f)
        rel = os.path.relpath(p, root)[:-3].replace(os.sep, '::')
        if rel.endswith('::mod'): rel = rel[:-5]
        if rel in ('lib', 'main'): continue
        mods[rel] = p
def resolve(path):
    parts = path.split('::')
    for i in range(len(parts), 0, -1):
        cand = '::'.join(parts[:i])
        if cand in mods: return cand
    return None
edges = {m: set() for m in mods}
for m, p in mods.items():
    src = open(p).read()
    # drop test modules roughly
    # drop every #[cfg(test)] mod block (brace matched)
    out_src = []; i = 0
    for mt in re.finditer(r'#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod [a-z_]+\s*\{', src):
        if mt.start() < i: continue
        out_src.append(src[i:mt.start()])
        depth = 0; j = mt.end() - 1
        while j < len(src):
            if src[j] == '{': depth += 1
            elif src[j] == '}':
                depth -= 1
                if depth == 0: break
            j += 1
        i = j + 1
    out_src.append(src[i:])
    src = ''.join(out_src)
    for mm in re.finditer(r'crate::([a-z_0-9]+(?:::[a-z_0-9]+)*)', src):
        t = resolve(mm.group(1))
        if t and t != m and not m.startswith(t + '::') : edges[m].add(t)
    parent = m.rsplit('::', 1)[0] if '::' in m else ''
    for mm in re.finditer(r'super::([a-z_0-9]+(?:::[a-z_0-9]+)*)', src):
        base = parent
        t = resolve((base + '::' if base else '') + mm.group(1))
        if t and t != m and not m.startswith(t + '::'): edges[m].add(t)
# Tarjan SCC
idx = {}; low = {}; st = []; on = set(); out = []; c = [0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: out.append(sorted(comp))
for v in mods:
    if v not in idx: sc(v)
for comp in out:
    print('cycle:', ' '.join(comp))
    for a in comp:
        print('   ', a, '->', ' '.join(sorted(e for e in edges[a] if e in comp)))
print(len(out), 'cycles')
sys.exit(1 if out else 0)
