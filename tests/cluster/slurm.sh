#!/usr/bin/env bash
# A single-node SLURM on localhost for the cluster integration test.
#
#   tests/cluster/slurm.sh start    install (Debian slurm-wlm, munge) and start, if needed
#   tests/cluster/slurm.sh stop     stop and remove only what `start` started or wrote
#   tests/cluster/slurm.sh status   exit 0 when a SLURM answers here
#
# Idempotent: `start` does nothing when a SLURM already answers (ours or the machine's),
# and `stop` does nothing unless `start` left its state directory behind. Packages stay
# installed. Needs root for `start`; without root it only reports.
set -euo pipefail

STATE=${MELSTORE_SLURM_STATE:-/var/tmp/melstore-slurm}
CONF=/etc/slurm/slurm.conf   # srun inside jobs reads this fixed path
PARTITION=melstore

say() { echo "slurm.sh: $*" >&2; }

answers() { command -v sinfo >/dev/null && timeout 10 sinfo -h >/dev/null 2>&1; }

wait_for() {  # wait_for SECONDS COMMAND...
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        if ((SECONDS >= deadline)); then return 1; fi
        sleep 0.5
    done
}

node_idle() { sinfo -h -n localhost -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return
    fi
    say "installing slurm-wlm and munge from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_config() {
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024))
    mkdir -p /etc/slurm
    cat >"$CONF" <<EOF
# Written by melstore tests/cluster/slurm.sh; removed by 'slurm.sh stop'.
ClusterName=melstore
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# No accounting database: finished jobs must stay visible to squeue for the
# executor plugin's status checks.
MinJobAge=600
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    if answers; then
        say "a SLURM already answers here; leaving it alone"
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        say "no SLURM answers and starting one needs root"
        return 1
    fi
    if [ -e "$CONF" ] && [ ! -d "$STATE" ]; then
        say "$CONF exists but no SLURM answers; not overwriting someone else's configuration"
        return 1
    fi
    install_packages
    mkdir -p "$STATE/ctld" "$STATE/spool"
    [ -e "$CONF" ] || write_config

    if ! [ -S /run/munge/munge.socket.2 ] || ! munge -n </dev/null >/dev/null 2>&1; then
        mkdir -p /run/munge
        chown munge:munge /run/munge
        runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
        wait_for 10 test -s /run/munge/munged.pid
        cp /run/munge/munged.pid "$STATE/munged.pid"
    fi

    /usr/sbin/slurmctld -i
    wait_for 30 answers || { say "slurmctld did not answer; see $STATE/slurmctld.log"; return 1; }
    /usr/sbin/slurmd -N localhost
    wait_for 60 node_idle || { say "slurmd did not register; see $STATE/slurmd.log"; return 1; }
    say "SLURM is up: partition $PARTITION on localhost (state in $STATE)"
}

stop_pidfile() {
    local pidfile=$1 pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
        wait_for 30 bash -c "! kill -0 $pid 2>/dev/null" || kill -9 "$pid" 2>/dev/null || true
    fi
}

stop() {
    if [ ! -d "$STATE" ]; then
        say "nothing of ours to stop"
        return 0
    fi
    stop_pidfile "$STATE/slurmd.pid"
    stop_pidfile "$STATE/slurmctld.pid"
    stop_pidfile "$STATE/munged.pid"
    if [ -e "$CONF" ] && grep -q 'Written by melstore tests/cluster/slurm.sh' "$CONF"; then
        rm -f "$CONF"
    fi
    rm -rf "$STATE"
    say "stopped and removed what slurm.sh started"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) answers ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
