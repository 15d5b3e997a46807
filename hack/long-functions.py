#!/usr/bin/env python3
"""Functions in src/ longer than a limit (default 100 lines, signature to closing brace), test
modules included. `python3 hack/long-functions.py [SRC] [LIMIT]`; exit 1 when there is one. Used by
tests/suites/layout.rs (issue #32: no function over 100 lines)."""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else 'src'
limit = int(sys.argv[2]) if len(sys.argv) > 2 else 100
FN = re.compile(r'^\s*(pub(\([a-z]+\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+([A-Za-z_0-9]+)')
found = []


def blank(src):
    """Comments, strings and char literals blanked out (newlines kept), so braces in them do not
    count."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith('//', i):
            j = src.find('\n', i)
            i = n if j < 0 else j
        elif src.startswith('/*', i):
            j = src.find('*/', i + 2)
            j = n if j < 0 else j + 2
            out.append('\n' * src.count('\n', i, j))
            i = j
        elif c == 'r' and re.match(r'r#*"', src[i:i + 12]) and not (i and (src[i - 1].isalnum() or src[i - 1] == '_')):
            hashes = re.match(r'r(#*)"', src[i:]).group(1)
            close = '"' + hashes
            j = src.find(close, i + 2 + len(hashes))
            j = n if j < 0 else j + len(close)
            out.append('\n' * src.count('\n', i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == '\\' else 1
            out.append('\n' * src.count('\n', i, j + 1))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^'\\])'", src[i:i + 4]):
            m = re.match(r"'(\\.|[^'\\])'", src[i:i + 4])
            i += len(m.group(0))
        elif c == "'" and re.match(r"'\\u\{[0-9a-fA-F]+\}'", src[i:i + 12]):
            i += len(re.match(r"'\\u\{[0-9a-fA-F]+\}'", src[i:]).group(0))
        else:
            out.append(c)
            i += 1
    return ''.join(out)

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
