#!/usr/bin/env bash
# Start a one-node SLURM cluster on localhost for tests/test_slurm.py.
#
# Installs Debian's slurm (22.05) and munge when they are missing, writes /etc/slurm/slurm.conf
# and gres.conf from slurm.conf.in, starts munged, slurmctld and slurmd, and waits until the node
# is idle. stop_cluster.sh undoes all of it by the pid files this script leaves in $RUN_DIR.
#
# Exit codes: 0 = cluster up; 77 = this machine cannot host the test cluster (not root, no
# apt-get, packages not installable, a foreign SLURM config present) -- the test skips on 77
# unless CI=true; anything else = the cluster failed to start, which is a real failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN_DIR="${SCVI_HUB_SLURM_RUN_DIR:-/var/spool/scvi-hub-slurm-test}"
CONF_DIR=/etc/slurm
# Written into every config this script creates, so it only ever replaces or removes its own.
MARKER="scvi-hub-workflow test cluster"
SKIP=77

cannot_run() {
    echo "start_cluster.sh: cannot host the test cluster here: $*" >&2
    exit "$SKIP"
}

[[ "$(id -u)" == 0 ]] || cannot_run "needs root (installs packages, writes /etc/slurm)"

# --- install ----------------------------------------------------------------------------------
missing=()
for cmd in slurmctld slurmd sbatch squeue scontrol sinfo munged; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 || cannot_run "missing ${missing[*]} and no apt-get"
    echo "start_cluster.sh: installing slurm (missing: ${missing[*]})"
    # Not the slurm-wlm metapackage: these four (no recommends) are all a one-node cluster needs.
    pkgs=(slurmctld slurmd slurm-client munge)
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1; then
        # A fresh machine has no package lists yet.
        apt-get update -q >/dev/null 2>&1 || cannot_run "apt-get update failed"
        apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1 ||
            cannot_run "apt-get install ${pkgs[*]} failed"
    fi
fi

# --- config -----------------------------------------------------------------------------------
mkdir -p "$CONF_DIR"
for f in slurm.conf gres.conf; do
    if [[ -e "$CONF_DIR/$f" ]] && ! grep -q "$MARKER" "$CONF_DIR/$f"; then
        cannot_run "$CONF_DIR/$f exists and is not ours; refusing to replace a real SLURM config"
    fi
done

# A previous run that was killed may have left daemons behind: stop them by their pid files.
SCVI_HUB_SLURM_KEEP_CONF=1 "$HERE/stop_cluster.sh" >/dev/null 2>&1 || true

rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR/state" "$RUN_DIR/spool"

# Declare what the machine really has: slurmd drains a node whose CPUs or memory are below the
# config, and RealMemory leaves headroom for the OS and the test's own Snakemake process.
cpus="$(nproc)"
mem_mb="$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)"
sed -e "s|@RUN_DIR@|$RUN_DIR|g" -e "s|@CPUS@|$cpus|g" -e "s|@REAL_MEMORY@|$mem_mb|g" \
    "$HERE/slurm.conf.in" >"$CONF_DIR/slurm.conf"
cat >"$CONF_DIR/gres.conf" <<EOF
# $MARKER (written by tests/slurm/start_cluster.sh)
# A fake GPU: lets sbatch --gpus=1 schedule on a machine without one. Nothing opens the file.
NodeName=localhost Name=gpu File=/dev/null
EOF

# --- munge ------------------------------------------------------------------------------------
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    if [[ ! -s /etc/munge/munge.key ]]; then
        mkdir -p /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid
    # Only a munged we started is ours to stop.
    cp /run/munge/munged.pid "$RUN_DIR/munged.pid"
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
fi
munge -n | unmunge >/dev/null || {
    echo "start_cluster.sh: munged does not answer" >&2
    exit 1
}

# --- slurm ------------------------------------------------------------------------------------
# -c: start from an empty state, so job ids and records from an earlier run do not leak in.
slurmctld -c
# -N localhost: the node name in slurm.conf, whatever this machine's hostname is.
slurmd -N localhost

for _ in $(seq 120); do
    state="$(sinfo -h -n localhost -o %t 2>/dev/null | sort -u | head -n1 || true)"
    if [[ "$state" == idle ]]; then
        echo "start_cluster.sh: node localhost idle; partitions: $(sinfo -h -o %P | tr '\n' ' ')"
        exit 0
    fi
    sleep 0.25
done

echo "start_cluster.sh: node did not become idle (state: '${state:-none}')" >&2
scontrol show node localhost >&2 || true
tail -n 30 "$RUN_DIR/slurmctld.log" "$RUN_DIR/slurmd.log" >&2 || true
exit 1
