#!/usr/bin/env python3
"""Module import cycles in src/: every path a module names outside its #[cfg(test)] modules is an
edge to the module that path lands in. Paths are read from `use` trees (braces expanded, so
`use crate::a::{b, c::d}` names both `a::b` and `a::c::d`) and from code, and resolved the way
rustc does: `crate::`, `super::`, `self::`, a child module of this one (`huawei::SHARING` in
`providers/mod.rs` is an edge to `providers::huawei`), or a name a `use` brought in
(`use crate::x::providers;` then `providers::sharing(...)`). A module naming one of its own
ancestors (`super::Error`) is not an edge: a child lives inside its parent. Strongly connected
components of more than one module are printed; exit 1 when there is one.

`python3 hack/import-cycles.py [SRC]` — used by tests/suites/layout.rs (issues #11, #32)."""
import os
import re
import sys

from rust_source import blank, without_test_modules

IDENT = r'[A-Za-z_][A-Za-z_0-9]*'


def modules(root):
    mods = {}
    for dp, _, fs in os.walk(root):
        for f in fs:
            if not f.endswith('.rs'):
                continue
            p = os.path.join(dp, f)
            rel = os.path.relpath(p, root)[:-3].replace(os.sep, '::')
            if rel.endswith('::mod'):
                rel = rel[:-5]
            if rel in ('lib', 'main'):
                continue
            mods[rel] = p
    return mods


def use_leaves(tree):
    """`a::{b, c::{d, e@f}, self}` (`@` for ` as `) -> [(path, alias)]."""
    tree = re.sub(r'\s+', '', tree)
    out = []

    def walk(prefix, t):
        depth, start, parts = 0, 0, []
        for k, ch in enumerate(t):
            if ch == '{':
                depth += 1
            elif ch == '}':
                depth -= 1
            elif ch == ',' and depth == 0:
                parts.append(t[start:k])
                start = k + 1
        parts.append(t[start:])
        for part in parts:
            if not part:
                continue
            b = part.find('{')
            if b >= 0 and part.endswith('}'):
                head = part[:b].rstrip(':')
                walk(prefix + ([h for h in head.split('::') if h]), part[b + 1:-1])
                continue
            alias = None
            if '@' in part:
                part, alias = part.split('@', 1)
            segs = prefix + [s for s in part.split('::') if s]
            if segs and segs[-1] == 'self':
                segs = segs[:-1]
            if segs and segs[-1] != '*':
                out.append((segs, alias or segs[-1]))
            elif segs:
                out.append((segs[:-1], None))

    walk([], tree)
    return out


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else 'src'
    mods = modules(root)

    def resolve(abs_segs):
        for i in range(len(abs_segs), 0, -1):
            cand = '::'.join(abs_segs[:i])
            if cand in mods:
                return cand
        return None

    def absolute(m, segs, names):
        """The absolute module path segments a path written in module `m` names, or None."""
        if not segs:
            return None
        here = m.split('::')
        head, rest = segs[0], segs[1:]
        if head == 'crate':
            return rest
        if head == 'self':
            return here + rest
        if head == 'super':
            base = here[:-1]
            while rest and rest[0] == 'super':
                base, rest = base[:-1], rest[1:]
            return base + rest
        if '::'.join(here + [head]) in mods:
            return here + segs
        if head in names:
            return names[head] + rest
        return None

    edges = {m: set() for m in mods}
    for m, p in mods.items():
        src = without_test_modules(blank(open(p).read()))
        names = {}
        uses = []
        for mt in re.finditer(r'\buse\s+([^;]+);', src):
            tree = mt.group(1)
            for segs, alias in use_leaves(re.sub(r'\s+as\s+', '@', tree)):
                a = absolute(m, segs, names)
                if a is None:
                    continue
                uses.append(a)
                if alias and alias != '*' and '::'.join(a) in mods:
                    names[alias] = a
        paths = list(uses)
        body = re.sub(r'\buse\s+[^;]+;', '', src)
        for mt in re.finditer(r'(?<![A-Za-z_0-9:])((?:' + IDENT + r'::)+' + IDENT + ')', body):
            a = absolute(m, mt.group(1).split('::'), names)
            if a is not None:
                paths.append(a)
        for a in paths:
            t = resolve(a)
            if t and t != m and not m.startswith(t + '::'):
                edges[m].add(t)

    idx, low, st, on, out, c = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def sc(v):
        idx[v] = low[v] = c[0]
        c[0] += 1
        st.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in idx:
                sc(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], idx[w])
        if low[v] == idx[v]:
            comp = []
            while True:
                w = st.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(mods):
        if v not in idx:
            sc(v)
    for comp in out:
        print('cycle:', ' '.join(comp))
        for a in comp:
            print('   ', a, '->', ' '.join(sorted(e for e in edges[a] if e in comp)))
    print(len(out), 'cycles')
    if '--edges' in sys.argv:
        for m in sorted(edges):
            print(m, '->', ' '.join(sorted(edges[m])))
    sys.exit(1 if out else 0)


main()
