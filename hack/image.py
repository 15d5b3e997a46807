#!/usr/bin/env python3
"""Build the operator's OCI image without a container engine.

    hack/image.py --binary target/release/image-replication-operator --out DIR [--archive FILE]
                  [--version V] [--revision R] [--source URL] [--licenses SPDX] [--created EPOCH]

Writes an OCI image layout into DIR (oci-layout, index.json, blobs/sha256/...) and, with
--archive, the same layout as one tar (usable as `oci-archive:FILE`). The root filesystem is
what the binary needs to run and nothing else: the binary, the shared libraries it links
(resolved with ldd, with the ELF interpreter), the CA bundle, /etc/passwd and /etc/group with the
nonroot user 65532, its home and /tmp. No shell. Layers are reproducible: entries sorted, owners
numeric, every mtime fixed (--created, default SOURCE_DATE_EPOCH or the commit time), gzip
without a name or time: the same checkout gives the same digest.

The image config: entrypoint the binary, `run` as the default argument, user 65532:65532, and
the OCI labels source, version, revision, licenses (also as manifest annotations).
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile

BIN_PATH = "usr/local/bin/image-replication-operator"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def sh(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def libraries(binary):
    """(path in the image, path on this machine) of every shared library the binary loads."""
    out = []
    for line in sh("ldd", binary).splitlines():
        line = line.strip()
        m = re.match(r"(\S+) => (\S+) \(0x[0-9a-f]+\)$", line)
        if m:
            out.append((m.group(2), m.group(2)))
            continue
        m = re.match(r"(/\S+) \(0x[0-9a-f]+\)$", line)  # the ELF interpreter
        if m:
            out.append((m.group(1), m.group(1)))
    return sorted(set((p.lstrip("/"), os.path.realpath(h)) for p, h in out))


class Layer:
    """A reproducible tar: entries sorted, numeric owners, fixed mtime."""

    def __init__(self, mtime):
        self.mtime = mtime
        self.entries = {}  # path -> (TarInfo, bytes or None)

    def _info(self, path, kind, mode, uid=0, gid=0):
        ti = tarfile.TarInfo(path)
        ti.type = kind
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.uname = ti.gname = ""
        ti.mtime = self.mtime
        return ti

    def dir(self, path, mode=0o755, uid=0, gid=0):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            self.entries.setdefault(parent, (self._info(parent, tarfile.DIRTYPE, 0o755), None))
        p = "/".join(parts)
        self.entries[p] = (self._info(p, tarfile.DIRTYPE, mode, uid, gid), None)

    def file(self, path, data, mode=0o644):
        path = path.strip("/")
        if "/" in path:
            parent = path.rsplit("/", 1)[0]
            if parent not in self.entries:
                self.dir(parent)
        ti = self._info(path, tarfile.REGTYPE, mode)
        ti.size = len(data)
        self.entries[path] = (ti, data)

    def tar(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            for path in sorted(self.entries):
                ti, data = self.entries[path]
                t.addfile(ti, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()


def gz(data):
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as g:
        g.write(data)
    return buf.getvalue()


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_blob(out, data):
    d = sha(data)
    path = os.path.join(out, "blobs", "sha256", d.split(":", 1)[1])
    with open(path, "wb") as f:
        f.write(data)
    return d


def rfc3339(epoch):
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_created():
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    try:
        return int(sh("git", "log", "-1", "--format=%ct").strip())
    except Exception:
        return 0


def rootfs(binary, mtime):
    layer = Layer(mtime)
    with open(binary, "rb") as f:
        layer.file(BIN_PATH, f.read(), 0o755)
    for in_image, on_host in libraries(binary):
        with open(on_host, "rb") as f:
            layer.file(in_image, f.read(), 0o755)
    with open(CA_BUNDLE, "rb") as f:
        layer.file(CA_BUNDLE, f.read())
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
    layer.file("etc/group", b"root:x:0:\nnonroot:x:65532:\n")
    layer.file("etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files dns\n")
    layer.dir("home/nonroot", 0o700, 65532, 65532)
    layer.dir("tmp", 0o1777)
    return layer.tar()


def build(args):
    out = args.out
    os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)
    for name in os.listdir(os.path.join(out, "blobs", "sha256")):
        os.remove(os.path.join(out, "blobs", "sha256", name))
    created = rfc3339(args.created)
    tar = rootfs(args.binary, args.created)
    layer_gz = gz(tar)
    layer_digest = write_blob(out, layer_gz)
    labels = {
        "org.opencontainers.image.source": args.source,
        "org.opencontainers.image.version": args.version,
        "org.opencontainers.image.revision": args.revision,
        "org.opencontainers.image.licenses": args.licenses,
        "org.opencontainers.image.title": "image-replication-operator",
    }
    config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": "65532:65532",
            "Entrypoint": ["/" + BIN_PATH],
            "Cmd": ["run"],
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=" + CA_BUNDLE],
            "WorkingDir": "/home/nonroot",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [sha(tar)]},
        "history": [{"created": created, "created_by": "hack/image.py (binary, its libraries, CA bundle, nonroot user)"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_digest = write_blob(out, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": len(layer_gz)}],
        "annotations": {**labels, "org.opencontainers.image.created": created},
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    manifest_digest = write_blob(out, manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": len(manifest_bytes),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": args.version},
        }],
    }
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f, sort_keys=True, separators=(",", ":"))
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    if args.archive:
        archive(out, args.archive, args.created)
    return manifest_digest


def archive(layout, path, mtime):
    layer = Layer(mtime)
    for root, dirs, files in os.walk(layout):
        rel = os.path.relpath(root, layout)
        if rel != ".":
            layer.dir(rel)
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                layer.file(os.path.normpath(os.path.join(rel, name)), f.read())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(layer.tar())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--archive")
    p.add_argument("--version", default="0.1.0")
    p.add_argument("--revision", default="")
    p.add_argument("--source", default="https://github.com/imageops/image-replication-operator")
    p.add_argument("--licenses", default="NOASSERTION")
    p.add_argument("--created", type=int, default=None)
    args = p.parse_args()
    if args.created is None:
        args.created = default_created()
    if not args.revision:
        try:
            args.revision = sh("git", "rev-parse", "HEAD").strip()
        except Exception:
            args.revision = "unknown"
    digest = build(args)
    print(f"{args.out}: {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
