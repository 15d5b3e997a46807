#!/usr/bin/env python3
"""Write an OCI image layout with a real multi-layer, optionally multi-arch image.

Layers are gzip'd tars of random bytes (so they do not compress or dedupe by accident), except
the shared base layer, which is the same for every platform and every --repo-seed. Push the
result with: skopeo copy --all oci:DIR:TAG docker://HOST/REPO:TAG
"""
import argparse, gzip, hashlib, io, json, os, random, tarfile


def blob(layout, data):
    d = hashlib.sha256(data).hexdigest()
    p = os.path.join(layout, "blobs", "sha256", d)
    if not os.path.exists(p):
        with open(p, "wb") as f:
            f.write(data)
    return "sha256:" + d, len(data)


def randbytes(rnd, n):
    """n random bytes from rnd, in pieces (random.randbytes is limited to 256 MiB at a time)."""
    return b"".join(rnd.randbytes(min(64 << 20, n - i)) for i in range(0, n, 64 << 20))


def layer(payload, name):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        info.mtime = 0
        t.addfile(info, io.BytesIO(payload))
    return gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--tag", default="1.0")
    ap.add_argument("--platforms", default="linux/amd64,linux/arm64")
    ap.add_argument("--layers", type=int, default=2, help="layers per platform besides the shared base")
    ap.add_argument("--layer-size", type=int, default=256 * 1024)
    ap.add_argument("--base-size", type=int, default=512 * 1024, help="shared base layer (0: none)")
    ap.add_argument("--seed", type=int, default=1, help="varies the non-base layers")
    ap.add_argument("--sign", action="store_true", help="add a cosign-style sha256-<hex>.sig tag")
    a = ap.parse_args()

    os.makedirs(os.path.join(a.dir, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(a.dir, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    rnd = random.Random(a.seed)
    base = None
    if a.base_size > 0:
        base = blob(a.dir, layer(randbytes(random.Random(0), a.base_size), "base.bin"))

    manifests = []
    for plat in a.platforms.split(","):
        os_, arch = plat.split("/")
        layers = []
        if base:
            layers.append(base)
        for i in range(a.layers):
            layers.append(blob(a.dir, layer(randbytes(rnd, a.layer_size), f"{arch}-{i}.bin")))
        diff_ids = ["sha256:" + hashlib.sha256(gzip.decompress(open(os.path.join(a.dir, "blobs", "sha256", d.split(":")[1]), "rb").read())).hexdigest() for d, _ in layers]
        config = json.dumps({
            "architecture": arch, "os": os_, "created": "2026-01-01T00:00:00Z",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "2026-01-01T00:00:00Z", "created_by": f"layer {i}"} for i in range(len(layers))],
        }, sort_keys=True).encode()
        cd, cs = blob(a.dir, config)
        m = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s} for d, s in layers],
        }, sort_keys=True).encode()
        md, ms = blob(a.dir, m)
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
                          "platform": {"architecture": arch, "os": os_}})

    refs = []
    if len(manifests) == 1:
        top = dict(manifests[0])
        top.pop("platform")
    else:
        idx = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}, sort_keys=True).encode()
        d, s = blob(a.dir, idx)
        top = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": s}
    refs.append(dict(top, annotations={"org.opencontainers.image.ref.name": a.tag}))

    if a.sign:
        payload = json.dumps({"critical": {"image": {"docker-manifest-digest": top["digest"]}, "type": "cosign container image signature"}}).encode()
        pd, ps = blob(a.dir, payload)
        cd, cs = blob(a.dir, b"{}")
        sig = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": pd, "size": ps,
                        "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQDfake"}}],
        }, sort_keys=True).encode()
        sd, ss = blob(a.dir, sig)
        sig_tag = top["digest"].replace(":", "-") + ".sig"
        refs.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sd, "size": ss,
                     "annotations": {"org.opencontainers.image.ref.name": sig_tag}})
        print("signature tag:", sig_tag)

    with open(os.path.join(a.dir, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": refs}, f)
    print("digest:", top["digest"])


if __name__ == "__main__":
    main()
