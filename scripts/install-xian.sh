#!/usr/bin/env bash
# Installs what running Xian's real node here needs, without touching the
# host's own Python or C library:
#
#   * a Debian `sid` root file system (debootstrap, minbase) holding
#     python3.14 and a virtual environment /opt/xian-venv with the pinned
#     xian-tech-abci (with its [vm] extra) and xian-tech-py;
#     at $STATESNAP_XIAN_ROOT, by default /var/lib/statesnap/xian-sid;
#   * CometBFT v0.39.3, the release Xian's own deployment builds, in a
#     directory of its own ($STATESNAP_COMETBFT_039_DIR, by default
#     /var/lib/statesnap/cometbft-0.39.3). It reports its version as 0.39.0.
#     The 0.38.26 `cometbft` of scripts/install-cometbft.sh stays where it is.
#
# The harness (harness/src/xian/install.rs) finds them through the same
# variables, and takes the 0.39 binary itself from $COMETBFT_039 when set. Safe to run again: a stamp file records what was installed,
# so a rerun with the same pins does nothing and prints nothing; changed pins
# rebuild. The root file system is built under a temporary name and renamed
# into place only when complete, so an interrupted run never looks done.
# Needs root (debootstrap and chroot).
set -euo pipefail

SUITE=sid
PY=python3.14
ABCI_PIN="xian-tech-abci[vm]==0.9.3"
PY_SDK_PIN="xian-tech-py==0.5.2"
COMETBFT_VERSION=0.39.3
COMETBFT_REPORTS=0.39.0
COMETBFT_MODULE=github.com/cometbft/cometbft/cmd/cometbft

ROOT=${STATESNAP_XIAN_ROOT:-/var/lib/statesnap/xian-sid}
CMT_DIR=${STATESNAP_COMETBFT_039_DIR:-/var/lib/statesnap/cometbft-$COMETBFT_VERSION}
STAMP_NAME=.statesnap-xian-stamp
# What the stamp must say: any change of a pin rebuilds the root file system.
WANT_STAMP="statesnap-xian 1
suite=$SUITE
apt=$PY ${PY}-venv ca-certificates
pip=$ABCI_PIN $PY_SDK_PIN"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { printf 'install-xian: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "need root to run: $*"
    fi
}

# The first `URIs:` of the host's Debian sources (deb822), else of sources.list.
debian_mirror() {
    local url=""
    if [ -r /etc/apt/sources.list.d/debian.sources ]; then
        url=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$url" ] && [ -r /etc/apt/sources.list ]; then
        url=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list)
    fi
    [ -n "$url" ] || url=http://deb.debian.org/debian
    echo "$url"
}

install_rootfs() {
    if [ -f "$ROOT/$STAMP_NAME" ] && [ "$(cat "$ROOT/$STAMP_NAME")" = "$WANT_STAMP" ]; then
        return 0
    fi
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap (Debian package of the host)"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    local mirror parent partial start
    mirror=$(debian_mirror)
    parent=$(dirname "$ROOT")
    partial="$ROOT.partial"
    as_root mkdir -p "$parent"
    # A previous interrupted run may have left a partial tree (and, if it was
    # killed inside the chroot, nothing mounted: every mount below lives in a
    # private mount namespace that ends with the command).
    as_root rm -rf --one-file-system "$partial"
    start=$(date +%s)
    say "building a Debian $SUITE root file system for Python 3.14 in $ROOT (from $mirror; a few minutes)"
    local log="$parent/install-xian.log"
    if ! as_root debootstrap --variant=minbase "$SUITE" "$partial" "$mirror" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "debootstrap $SUITE into $partial failed (log above, whole log in $log)"
    fi
    # The mirror may be a dated snapshot whose Release files have expired.
    printf 'Acquire::Check-Valid-Until "false";\nAcquire::Check-Date "false";\n' \
        | as_root tee "$partial/etc/apt/apt.conf.d/99statesnap" >/dev/null
    # TLS may be intercepted: pip inside trusts the host's CA bundle.
    as_root cp /etc/ssl/certs/ca-certificates.crt "$partial/etc/statesnap-host-ca.crt"
    printf '[global]\ncert = /etc/statesnap-host-ca.crt\ndisable-pip-version-check = true\n' \
        | as_root tee "$partial/etc/pip.conf" >/dev/null
    as_root cp /etc/resolv.conf "$partial/etc/resolv.conf"

    local inside="set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $PY ${PY}-venv ca-certificates >/dev/null
$PY -m venv /opt/xian-venv
/opt/xian-venv/bin/pip install -q '$ABCI_PIN' '$PY_SDK_PIN'
/opt/xian-venv/bin/python -c 'import xian, xian_py, contracting'
"
    if ! as_root "$HERE/xian-chroot.sh" --root "$partial" --no-check sh -c "$inside" >>"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "installing $PY and the Xian packages inside $partial failed (log above, whole log in $log)"
    fi
    as_root rm -rf "$partial/var/cache/apt/archives"/*.deb
    printf '%s\n' "$WANT_STAMP" | as_root tee "$partial/$STAMP_NAME" >/dev/null
    if [ -e "$ROOT" ]; then
        say "replacing $ROOT (its pins differ)"
        as_root rm -rf --one-file-system "$ROOT"
    fi
    as_root mv "$partial" "$ROOT"
    say "Xian's node installed in $ROOT in $(( $(date +%s) - start )) s ($(du -sh "$ROOT" | cut -f1))"
}

install_cometbft_039() {
    local bin="$CMT_DIR/cometbft"
    if [ -x "$bin" ] && [ "$("$bin" version 2>/dev/null)" = "$COMETBFT_REPORTS" ] \
        && [ "$(cat "$CMT_DIR/.version" 2>/dev/null)" = "$COMETBFT_VERSION" ]; then
        return 0
    fi
    command -v go >/dev/null || die "Go is needed to build cometbft $COMETBFT_VERSION (see scripts/install-cometbft.sh)"
    local start partial="$CMT_DIR.partial"
    start=$(date +%s)
    say "installing cometbft $COMETBFT_VERSION into $CMT_DIR with go install (about 2 minutes)"
    as_root rm -rf "$partial"
    as_root mkdir -p "$partial"
    if ! as_root env GOBIN="$partial" go install "$COMETBFT_MODULE@v$COMETBFT_VERSION"; then
        die "go install $COMETBFT_MODULE@v$COMETBFT_VERSION failed (see above)"
    fi
    [ "$("$partial/cometbft" version)" = "$COMETBFT_REPORTS" ] \
        || die "the cometbft built from v$COMETBFT_VERSION reports version $("$partial/cometbft" version), not $COMETBFT_REPORTS"
    echo "$COMETBFT_VERSION" | as_root tee "$partial/.version" >/dev/null
    as_root rm -rf "$CMT_DIR"
    as_root mv "$partial" "$CMT_DIR"
    say "installed $bin in $(( $(date +%s) - start )) s"
}

# The two are independent; run them side by side (the chroot is mostly
# network and disk, go install mostly CPU).
install_cometbft_039 &
cmt_pid=$!
rootfs_ok=0
install_rootfs || rootfs_ok=$?
cmt_ok=0
wait "$cmt_pid" || cmt_ok=$?
[ "$rootfs_ok" = 0 ] && [ "$cmt_ok" = 0 ] || exit 1
