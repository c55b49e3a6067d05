#!/usr/bin/env bash
# Builds the node image for docker pools from this checkout, with nothing pulled:
# FROM scratch, holding corral-agent (as built here), the shared libraries it links,
# and BusyBox for /bin/sh and the usual commands that tasks run.
#
#   bash docker/agent-image.sh                      # target/release/corral-agent -> corral-agent:latest
#   bash docker/agent-image.sh --debug              # target/debug/corral-agent
#   bash docker/agent-image.sh --agent PATH --tag corral-agent:test
#
# Needs a statically linked busybox (Debian: apt-get install busybox-static) and
# `cargo build [--release] -p corral-agent` first. Prints the image id.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
agent="$target/release/corral-agent"
tag="corral-agent:latest"
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) agent="$target/debug/corral-agent" ;;
    --agent|--tag)
      [ $# -ge 2 ] || { echo "agent-image.sh: $1 needs a value" >&2; exit 2; }
      if [ "$1" = --agent ]; then agent="$2"; else tag="$2"; fi
      shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "agent-image.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

[ -x "$agent" ] || { echo "agent-image.sh: no agent at $agent: run cargo build -p corral-agent first" >&2; exit 1; }
busybox="$(command -v busybox || true)"
# ldd fails on a static binary ("not a dynamic executable").
if [ -z "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
  echo "agent-image.sh: needs a static busybox: apt-get install busybox-static" >&2
  exit 1
fi

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
root="$context/rootfs"
mkdir -p "$root/bin" "$root/usr/local/bin" "$root/tmp" "$root/var/lib/corral" "$root/etc"
chmod 1777 "$root/tmp"

# The agent without its debug info (a smaller image, a faster build), and every
# library the dynamic loader would load for it, at the same paths.
objcopy --strip-debug "$agent" "$root/usr/local/bin/corral-agent"
# (A static agent links nothing: ldd fails and there is nothing to copy.)
libs="$(ldd "$agent" 2>/dev/null || true)"
if echo "$libs" | grep -q 'not found'; then
  echo "agent-image.sh: $agent needs libraries this machine lacks:" >&2
  echo "$libs" | grep 'not found' >&2
  exit 1
fi
for lib in $(echo "$libs" | grep -o '/[^ ]*' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"

cat > "$context/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/bin
WORKDIR /var/lib/corral
ENTRYPOINT ["corral-agent"]
EOF

# The legacy builder needs no BuildKit component; -q prints only the image id.
if ! out="$(DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}" docker build -q -t "$tag" "$context" 2>&1)"; then
  echo "$out" >&2
  exit 1
fi
echo "$out" | grep '^sha256:'
docker image inspect "$tag" --format "built $tag ({{.Size}} bytes)" >&2
