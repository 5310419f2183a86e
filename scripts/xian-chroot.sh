#!/usr/bin/env bash
# Runs a command inside the Debian sid root file system of
# scripts/install-xian.sh (Python 3.14 and Xian's node in /opt/xian-venv).
#
#   scripts/xian-chroot.sh [--root DIR] [--bind DIR]... [--env NAME=VALUE]... [--cwd DIR] [--] CMD [ARG]...
#
# Each --bind DIR is mounted at the same path inside, so unix sockets and node
# homes under it are shared with the host. /proc, /sys and /dev are mounted
# too, and a fresh /tmp of its own. Every mount is made in a private mount
# namespace of this command alone (unshare -m): nothing is left mounted when
# it ends, however it ends, and two runs never see each other's mounts. The command starts with a clean
# environment: HOME=/root, PATH with the venv's bin first, LANG=C.UTF-8, the
# host's CA bundle for pip, and whatever --env adds (--env HOME=DIR picks
# Xian's storage home). The command replaces this script's process (exec), so
# its pid is the command's pid, and a signal sent to it reaches the command.
#
# Root file system: --root, else $STATESNAP_XIAN_ROOT, else
# /var/lib/statesnap/xian-sid. Needs root. (statesnap's harness runs a copy
# of this file, harness/src/xian/install.rs embeds it.)
set -euo pipefail

if [ "${1:-}" != --in-namespace ]; then
    exec unshare --mount --propagation private -- "$BASH" "${BASH_SOURCE[0]}" --in-namespace "$@"
fi
shift

ROOT=${STATESNAP_XIAN_ROOT:-/var/lib/statesnap/xian-sid}
die() { printf 'xian-chroot: %s\n' "$*" >&2; exit 1; }

binds=()
envs=()
cwd=/
check=1
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=$2; shift 2 ;;
        --bind) binds+=("$2"); shift 2 ;;
        --env) envs+=("$2"); shift 2 ;;
        --cwd) cwd=$2; shift 2 ;;
        --no-check) check=0; shift ;;
        --) shift; break ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || die "no command given"
[ -d "$ROOT" ] || die "no Xian root file system at $ROOT: run scripts/install-xian.sh (or scripts/setup.sh)"
if [ "$check" = 1 ] && [ ! -f "$ROOT/.statesnap-xian-stamp" ]; then
    die "$ROOT is incomplete (no .statesnap-xian-stamp): run scripts/install-xian.sh"
fi

mount -t proc proc "$ROOT/proc"
mount --rbind /sys "$ROOT/sys"
mount --rbind /dev "$ROOT/dev"
# A private /tmp: mount points made below for directories under /tmp vanish
# with the namespace instead of piling up in the root file system.
mount -t tmpfs -o mode=1777 tmpfs "$ROOT/tmp"
for dir in "${binds[@]}"; do
    [ -d "$dir" ] || die "--bind $dir: not a directory"
    dir=$(cd "$dir" && pwd -P)
    mkdir -p "$ROOT$dir"
    mount --bind "$dir" "$ROOT$dir"
done

exec chroot "$ROOT" /usr/bin/env -i \
    HOME=/root \
    PATH=/opt/xian-venv/bin:/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin \
    LANG=C.UTF-8 \
    PIP_CERT=/etc/statesnap-host-ca.crt \
    SSL_CERT_FILE=/etc/statesnap-host-ca.crt \
    "${envs[@]}" \
    /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$cwd" "$@"
