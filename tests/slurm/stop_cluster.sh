#!/usr/bin/env bash
# Stop the test cluster started by start_cluster.sh: the daemons by their pid files (never by
# name, so a real slurmd/munged on the machine is left alone), then remove the configs it wrote.
# Idempotent: safe to run when nothing is running.
set -uo pipefail

RUN_DIR="${SCVI_HUB_SLURM_RUN_DIR:-/var/spool/scvi-hub-slurm-test}"
CONF_DIR=/etc/slurm
MARKER="scvi-hub-workflow test cluster"

stop_pidfile() {
    local name="$1" pidfile="$2" pid
    [[ -s "$pidfile" ]] || return 0
    pid="$(tr -dc 0-9 <"$pidfile")"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "stop_cluster.sh: $name ($pid) ignored SIGTERM; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
        echo "stop_cluster.sh: stopped $name ($pid)"
    fi
    rm -f "$pidfile"
}

# slurmd first, so it does not try to reach a controller that is already gone.
stop_pidfile slurmd "$RUN_DIR/slurmd.pid"
stop_pidfile slurmctld "$RUN_DIR/slurmctld.pid"
# $RUN_DIR/munged.pid exists only when start_cluster.sh started munged itself.
stop_pidfile munged "$RUN_DIR/munged.pid"

if [[ -z "${SCVI_HUB_SLURM_KEEP_CONF:-}" ]]; then
    for f in slurm.conf gres.conf; do
        if [[ -e "$CONF_DIR/$f" ]] && grep -q "$MARKER" "$CONF_DIR/$f"; then
            rm -f "$CONF_DIR/$f"
        fi
    done
fi
exit 0
