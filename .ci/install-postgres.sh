#!/bin/sh
# Install the PostgreSQL server binaries (initdb, pg_ctl, postgres) needed by
# the test suite. The tests create and run their own throw-away clusters, so
# the cluster Debian creates on installation is kept stopped and disabled.
#
# Idempotent: exits 0 without doing anything when the binaries are present.
# Works unattended as root (CI) or via sudo when run as an ordinary user.
set -eu

have_server() {
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
            echo "PostgreSQL server binaries found in $dir"
            return 0
        fi
    done
    return 1
}

if have_server; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -n"
else
    echo "install-postgres.sh: must run as root (or with passwordless sudo)" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-postgres.sh: apt-get not found; install the PostgreSQL server manually" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Keep package scripts from starting the cluster Debian creates: invoke-rc.d
# consults policy-rc.d, and exit status 101 means "action forbidden".
POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    ADDED_POLICY=1
fi
cleanup() {
    if [ "$ADDED_POLICY" -eq 1 ]; then
        $SUDO rm -f "$POLICY"
    fi
}
trap cleanup EXIT INT TERM

$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends postgresql </dev/null

# Stop and disable any cluster that was started anyway (e.g. under systemd,
# which ignores policy-rc.d on some setups).
if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters --no-header 2>/dev/null | while read -r ver name _rest; do
        $SUDO pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true
        conf="/etc/postgresql/$ver/$name/start.conf"
        if [ -f "$conf" ]; then
            echo manual | $SUDO tee "$conf" >/dev/null
        fi
    done
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now postgresql >/dev/null 2>&1 || true
fi

if ! have_server; then
    echo "install-postgres.sh: installation finished but initdb/pg_ctl are still missing" >&2
    exit 1
fi
