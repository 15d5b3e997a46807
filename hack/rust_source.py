"""Reading Rust source for the layout checks (hack/import-cycles.py, hack/long-functions.py):
comments, strings and char literals blanked out, `#[cfg(test)]` modules dropped."""
import re


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


def without_test_modules(src):
    """`#[cfg(test)] mod x { ... }` blocks removed (braces matched: blank the source first)."""
    out, i = [], 0
    for mt in re.finditer(r'#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod [A-Za-z_][A-Za-z_0-9]*\s*\{', src):
        if mt.start() < i:
            continue
        out.append(src[i:mt.start()])
        depth, j = 0, mt.end() - 1
        while j < len(src):
            if src[j] == '{':
                depth += 1
            elif src[j] == '}':
                depth -= 1
                if depth == 0:
                    break
            j += 1
        i = j + 1
    out.append(src[i:])
    return ''.join(out)
