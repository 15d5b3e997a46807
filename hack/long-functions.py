#!/usr/bin/env python3
"""Functions in src/ longer than a limit (default 100 lines, signature to closing brace), test
modules included. `python3 hack/long-functions.py [SRC] [LIMIT]`; exit 1 when there is one. Used by
tests/suites/layout.rs (issue #32: no function over 100 lines)."""
import os
import re
import sys

from rust_source import blank

root = sys.argv[1] if len(sys.argv) > 1 else 'src'
limit = int(sys.argv[2]) if len(sys.argv) > 2 else 100
FN = re.compile(r'^\s*(pub(\([a-z]+\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+([A-Za-z_0-9]+)')
found = []


for dp, _, fs in os.walk(root):
    for f in sorted(fs):
        if not f.endswith('.rs'):
            continue
        p = os.path.join(dp, f)
        text = blank(open(p).read())
        lines = text.split('\n')
        i = 0
        while i < len(lines):
            m = FN.match(lines[i])
            if not m:
                i += 1
                continue
            # find the body's opening brace (or a `;`: a declaration)
            j, depth, opened = i, 0, False
            while j < len(lines):
                code = lines[j]
                if not opened and ';' in code and '{' not in code:
                    break
                for ch in code:
                    if ch == '{':
                        depth += 1
                        opened = True
                    elif ch == '}':
                        depth -= 1
                if opened and depth <= 0:
                    break
                j += 1
            n = j - i + 1
            if opened and n > limit:
                found.append((n, p, i + 1, m.group(6)))
            i += 1
found.sort(reverse=True)
for n, p, line, name in found:
    print(f'{p}:{line}: fn {name}: {n} lines')
print(len(found), f'functions over {limit} lines')
sys.exit(1 if found else 0)
