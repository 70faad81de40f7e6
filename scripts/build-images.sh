#!/usr/bin/env bash
# Builds obsctl's local container images from files already on this machine, without any
# registry: each image is FROM scratch plus binaries copied in with the shared libraries `ldd`
# lists. For air-gapped machines and for the tests (no registry is reachable there).
#
#   scripts/build-images.sh [--obsctl PATH]    # prints one line per image: NAME=REF
#
# Images (tags follow the packaged versions):
#   obsctl-local/busybox:<v>     Debian's busybox-static, /bin/sh and the applets.
#   obsctl-local/prometheus:<v>  Debian's /usr/bin/prometheus; the stack's Prometheus.
#   obsctl-local/standin:<v>     busybox httpd answering the readiness endpoints of the collector
#                                (:13133 /ready), the aggregator (:8889 /ready), Tempo (:3200 /ready),
#                                Loki (:3100 /ready) and Grafana (:3000 /api/health); it ignores its
#                                arguments. For timing `obsctl up` only: it receives and stores nothing.
#   obsctl-local/obsctl:<v>      the obsctl binary (default target/debug/obsctl), when present, also
#                                tagged <v>-<sha256 of the binary, 12 hex> (printed), so that a test
#                                keeps the binary it built even when another build retags <v>. It is
#                                the aggregator's real image (`obsctl serve`); given the collector's
#                                arguments it runs `obsctl relay` on the mounted collector config
#                                (forwards OTLP as the pipelines say, no processing, no queue); given
#                                Tempo's or Loki's it runs `obsctl serve` with its query API on their
#                                port (stores what it receives; answers obsctl's subset of their
#                                APIs). `--obsctl ""` skips this image. docs/observability.md says
#                                what each stand-in does not do.
# Then, for example:
#   OBSCTL_IMAGE_PROMETHEUS=obsctl-local/prometheus:2.42.0 obsctl up
# Needs: docker, busybox-static, prometheus (apt-get install busybox-static prometheus).
set -euo pipefail
cd "$(dirname "$0")/.."

obsctl_bin="${OBSCTL_BIN:-target/debug/obsctl}"
while [ $# -gt 0 ]; do
    case "$1" in
        --obsctl) obsctl_bin="$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "build-images.sh: unknown argument $1 (expected --obsctl PATH)" >&2; exit 2 ;;
    esac
done

need() { command -v "$1" >/dev/null 2>&1 || { echo "build-images.sh: $1 is not installed ($2)" >&2; exit 3; }; }
need docker "the Docker CLI"
busybox_bin="$(command -v busybox || true)"
[ -n "$busybox_bin" ] || { echo "build-images.sh: busybox is not installed (apt-get install busybox-static)" >&2; exit 3; }

# One build at a time on this machine (tests run in parallel).
if command -v flock >/dev/null 2>&1; then
    exec 9>"${TMPDIR:-/tmp}/obsctl-build-images.lock"
    flock 9
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# copy_with_libs BIN DEST_ROOT DEST_PATH: the binary and every shared library it loads.
copy_with_libs() {
    local bin="$1" root="$2" dest="$3"
    mkdir -p "$root$(dirname "$dest")"
    cp -L "$bin" "$root$dest"
    # A static binary has no libraries: ldd then fails, which is fine.
    { ldd "$bin" 2>/dev/null || true; } | { grep -oE '/[^ ]+' || true; } | while read -r lib; do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}

build() {
    local ref="$1" dir="$2"
    # The classic builder needs nothing but the daemon; no `# syntax=` line (that would pull).
    DOCKER_BUILDKIT=0 docker build --quiet -t "$ref" "$dir" >/dev/null 2>"$dir.err" || {
        cat "$dir.err" >&2
        echo "build-images.sh: building $ref failed" >&2
        exit 1
    }
}

# Whole outputs are read before parsing: `cmd | head -1` can kill cmd with SIGPIPE (pipefail).
busybox_help="$("$busybox_bin" 2>&1 || true)"
busybox_version="$(sed -nE '1s/^BusyBox v([0-9.]+).*/\1/p' <<<"$busybox_help")"

# busybox
ctx="$work/busybox"; mkdir -p "$ctx/root/bin" "$ctx/root/tmp"
copy_with_libs "$busybox_bin" "$ctx/root" /bin/busybox
for applet in sh ls cat echo env sleep true false wc grep mkdir rm; do ln -s busybox "$ctx/root/bin/$applet"; done
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY root/ /
ENV PATH=/bin
CMD ["/bin/sh"]
DOCKERFILE
build "obsctl-local/busybox:$busybox_version" "$ctx"
echo "busybox=obsctl-local/busybox:$busybox_version"

# stand-in for the collector, Tempo, Loki and Grafana
ctx="$work/standin"; mkdir -p "$ctx/root/bin" "$ctx/root/www/api" "$ctx/root/www/-"
copy_with_libs "$busybox_bin" "$ctx/root" /bin/busybox
echo ok > "$ctx/root/www/index.html"
echo ready > "$ctx/root/www/ready"
echo ready > "$ctx/root/www/-/ready"
echo '{"database":"ok"}' > "$ctx/root/www/api/health"
cat > "$ctx/root/standin" <<'SCRIPT'
#!/bin/busybox sh
# Arguments are the real component's flags: ignored. One httpd per readiness port. As PID 1 the
# shell must handle SIGTERM itself, or `docker stop` waits for its SIGKILL timeout.
for port in 3000 3100 3200 4318 8889 13133; do /bin/busybox httpd -p "$port" -h /www; done
trap 'exit 0' TERM INT
/bin/busybox httpd -f -p 4317 -h /www &
wait
SCRIPT
chmod 755 "$ctx/root/standin"
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY root/ /
ENTRYPOINT ["/standin"]
DOCKERFILE
build "obsctl-local/standin:$busybox_version" "$ctx"
echo "standin=obsctl-local/standin:$busybox_version"

# prometheus
if command -v prometheus >/dev/null 2>&1; then
    prom_help="$(prometheus --version 2>&1)"
    prom_version="$(sed -nE '1s/^prometheus, version ([0-9.]+).*/\1/p' <<<"$prom_help")"
    ctx="$work/prometheus"; mkdir -p "$ctx/root/prometheus" "$ctx/root/etc/prometheus" "$ctx/root/tmp"
    copy_with_libs "$(command -v prometheus)" "$ctx/root" /bin/prometheus
    cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY root/ /
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
DOCKERFILE
    build "obsctl-local/prometheus:$prom_version" "$ctx"
    echo "prometheus=obsctl-local/prometheus:$prom_version"
else
    echo "build-images.sh: prometheus is not installed; skipping its image (apt-get install prometheus)" >&2
fi

# obsctl: the aggregator runs it as it is (`serve ...`). Its entrypoint also stands in for the
# collector (`obsctl relay` on the collector's own config: data takes the real stack's path) and
# for Tempo and Loki (`obsctl serve` with its query API, which answers /ready, on that
# component's port and its database on the component's volume).
if [ -n "$obsctl_bin" ] && [ -x "$obsctl_bin" ]; then
    obsctl_help="$("$obsctl_bin" --version)"
    obsctl_version="$(awk '{print $2}' <<<"$obsctl_help")"
    ctx="$work/obsctl"; mkdir -p "$ctx/root/tmp" "$ctx/root/bin"
    copy_with_libs "$obsctl_bin" "$ctx/root" /bin/obsctl
    copy_with_libs "$busybox_bin" "$ctx/root" /bin/busybox
    cat > "$ctx/root/bin/entrypoint" <<'SCRIPT'
#!/bin/busybox sh
serve() {
    exec /bin/obsctl serve --allow-remote --otlp-grpc 0.0.0.0:4317 --otlp-http 0.0.0.0:4318 \
        --api "0.0.0.0:$1" --data-dir "$2/obsctl" --endpoints-file /tmp/endpoints.json
}
case "$*" in
    *otelcol*) exec /bin/obsctl relay --config "${1#--config=}" ;;
    *tempo.yaml*) serve 3200 /var/tempo ;;
    *loki.yaml*) serve 3100 /loki ;;
    *) exec /bin/obsctl "$@" ;;
esac
SCRIPT
    chmod 755 "$ctx/root/bin/entrypoint"
    cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY root/ /
ENTRYPOINT ["/bin/entrypoint"]
DOCKERFILE
    build "obsctl-local/obsctl:$obsctl_version" "$ctx"
    obsctl_sum="$(sha256sum "$obsctl_bin")"
    obsctl_ref="obsctl-local/obsctl:$obsctl_version-${obsctl_sum:0:12}"
    docker tag "obsctl-local/obsctl:$obsctl_version" "$obsctl_ref"
    echo "obsctl=$obsctl_ref"
fi
