#!/usr/bin/env bash
# The whole test suite, installing first what the tests need: Debian's prometheus (real scrapes
# and exemplar queries), busybox-static (local container images), chromium (renders the HTML
# reports headless), nginx (the TLS terminator of tests/tls.rs), docker-compose and openssl (the
# docs' compose example), kubernetes-client (kubectl kustomize renders deploy/), the Python
# OpenTelemetry SDK (a real OTLP client nobody here wrote) and jsonschema. CI calls exactly this
# script through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v busybox >/dev/null 2>&1 || missing+=(busybox-static)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
# The docs' compose example (tests/docs.rs runs it as written).
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# `kubectl kustomize` renders deploy/ (tests/argo_instrument.rs).
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing Debian packages: ${missing[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "==> installing Python test clients (tests/python/requirements.txt)"
python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --all-targets -- -D warnings
echo "==> cargo test (benches are run separately: cargo bench)"
cargo test
