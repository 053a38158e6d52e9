#!/usr/bin/env bash
# Starts and stops a one-node SLURM test cluster on this machine, for the job
# script tests (tests/e2e/slurm_jobs.sh) and for trying jobs/*.sbatch locally.
#
#   eval "$(scripts/slurm-cluster.sh start)"   start (or reuse) it; prints the
#                                               `export SLURM_CONF=...` clients need
#   scripts/slurm-cluster.sh env               print that export line again
#   scripts/slurm-cluster.sh status            exit 0 if it answers, 1 otherwise
#   scripts/slurm-cluster.sh stop              cancel its jobs, stop its daemons
#
# Everything lives in $SUPAIR_SLURM_DIR (default /tmp/supair-slurm): slurm.conf,
# state, spool, pid files and the daemons' logs (slurmctld.log, slurmd.log).
# `start` is idempotent: a cluster left running with the same slurm.conf is
# reused; one with a different configuration, or half dead, is stopped and
# started again. Needs root (slurmd runs jobs as their users) and the Debian
# packages slurm-wlm and munge (scripts/install-deps.sh). munged runs as user
# munge on its default socket; a munged already answering there is reused and
# left alone by `stop`.
#
# Test-cluster settings that differ from SLURM's defaults, and why:
# - AuthInfo=cred_expire=$SUPAIR_SLURM_REQUEUE_DELAY (default 5 s): SLURM holds
#   a requeued job back for the credential lifetime (default 120 s) by setting
#   its BeginTime; the tests requeue jobs and must not wait two minutes.
# - sched_interval/bf_interval of a few seconds, so a job whose BeginTime has
#   passed starts at once instead of at the next 30-60 s scheduling pass.
# - TaskPlugin=task/none and proctrack/linuxproc: no cgroups needed (containers).
set -euo pipefail

DIR=${SUPAIR_SLURM_DIR:-/tmp/supair-slurm}
CONF=$DIR/slurm.conf
CTLD_PORT=${SUPAIR_SLURM_PORT:-6817}
REQUEUE_DELAY=${SUPAIR_SLURM_REQUEUE_DELAY:-5}

say() { echo "slurm-cluster: $*" >&2; }
die() { echo "slurm-cluster: error: $*" >&2; exit 1; }

# Pid from FILE if that process is alive, else nothing.
live_pid() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# TERM, then KILL after a few seconds, the process whose pid FILE holds.
stop_pidfile() {
  local pid
  pid=$(live_pid "$1") || { rm -f "$1"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
  rm -f "$1"
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  if munge_ok; then return 0; fi
  [ -s /etc/munge/munge.key ] || {
    say "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null 2>&1; then mungekey --create --keyfile=/etc/munge/munge.key
    else dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
  }
  # A fresh container has no /run/munge (systemd's tmpfiles would make it).
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
  chmod 0700 /etc/munge /var/log/munge; chmod 0400 /etc/munge/munge.key
  chmod 0755 /run/munge; chmod 0711 /var/lib/munge
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
  munge_ok || die "munged does not answer (see /var/log/munge/munged.log)"
  # Our copy of its pid file tells `stop` that this munged is ours to end.
  cp /run/munge/munged.pid "$DIR/munged.pid" 2>/dev/null || pgrep -u munge -x munged | head -1 > "$DIR/munged.pid"
}

write_conf() {
  local host nodeline
  host=$(hostname -s)
  # The node exactly as slurmd sees it (CPUs, sockets, cores, memory).
  nodeline=$(slurmd -C 2>/dev/null | awk '/^NodeName=/{sub(/ *$/,""); print}') \
    || true
  [ -n "$nodeline" ] || die "'slurmd -C' printed no NodeName line (is slurm-wlm installed?)"
  nodeline=$(sed -E "s/^NodeName=[^ ]+/NodeName=$host NodeAddr=127.0.0.1/" <<<"$nodeline")
  cat > "$1" <<EOF
# One-node test cluster written by scripts/slurm-cluster.sh (do not edit: rewritten on start).
ClusterName=supairtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=$REQUEUE_DELAY
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=900
KillWait=10
InactiveLimit=0
SlurmdTimeout=300
SlurmctldTimeout=120
$nodeline State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

running() {
  [ -f "$CONF" ] && live_pid "$DIR/slurmctld.pid" >/dev/null && live_pid "$DIR/slurmd.pid" >/dev/null \
    && SLURM_CONF=$CONF timeout 10 scontrol ping 2>/dev/null | grep -q "is UP"
}

# Waits until the node takes jobs (idle, mixed or allocated).
wait_node() {
  local host st
  host=$(hostname -s)
  for _ in $(seq 60); do
    st=$(SLURM_CONF=$CONF sinfo -h -n "$host" -o %T 2>/dev/null | head -1 || true)
    case "$st" in
      idle*|mixed*|allocated*|completing*) return 0 ;;
      down*|drain*|fail*)
        SLURM_CONF=$CONF scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  die "node $host is '$st' after 30 s (see $DIR/slurmd.log and $DIR/slurmctld.log)"
}

cmd_stop() {
  if [ -f "$CONF" ] && live_pid "$DIR/slurmctld.pid" >/dev/null; then
    # Cancel our jobs first so no job processes outlive slurmd.
    local jobs
    mapfile -t jobs < <(SLURM_CONF=$CONF squeue -h -o %A 2>/dev/null)
    [ ${#jobs[@]} -gt 0 ] && { SLURM_CONF=$CONF timeout 10 scancel --quiet "${jobs[@]}" 2>/dev/null || true; }
    for _ in $(seq 30); do
      [ -z "$(SLURM_CONF=$CONF squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.5
    done
  fi
  stop_pidfile "$DIR/slurmd.pid"
  stop_pidfile "$DIR/slurmctld.pid"
  [ -f "$DIR/munged.pid" ] && stop_pidfile "$DIR/munged.pid"
  say "stopped"
}

cmd_start() {
  [ "$(id -u)" -eq 0 ] || die "needs root (slurmd starts jobs as their users); run it with sudo"
  for b in slurmctld slurmd munged scontrol sinfo; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] \
      || die "$b not found: install slurm-wlm and munge (scripts/install-deps.sh)"
  done
  export PATH=$PATH:/usr/sbin
  mkdir -p "$DIR"
  local new=$DIR/slurm.conf.new
  write_conf "$new"
  if running && cmp -s "$new" "$CONF"; then
    rm -f "$new"
    say "reusing the cluster already running ($CONF)"
  else
    if [ -f "$CONF" ]; then say "stopping what is left of a previous cluster"; cmd_stop; fi
    mv "$new" "$CONF"
    rm -rf "$DIR/state" "$DIR/spool"
    mkdir -p "$DIR/state" "$DIR/spool"
    start_munge
    # -c: a fresh start, no jobs or node states from an earlier run.
    slurmctld -c -f "$CONF" || die "slurmctld failed to start (see $DIR/slurmctld.log)"
    local _
    for _ in $(seq 50); do
      SLURM_CONF=$CONF timeout 5 scontrol ping 2>/dev/null | grep -q "is UP" && break; sleep 0.2
    done
    SLURM_CONF=$CONF scontrol ping 2>/dev/null | grep -q "is UP" \
      || { tail -20 "$DIR/slurmctld.log" >&2; die "slurmctld does not answer (log above)"; }
    slurmd -f "$CONF" || { tail -20 "$DIR/slurmd.log" >&2; die "slurmd failed to start (log above)"; }
    say "started (config $CONF, logs in $DIR)"
  fi
  wait_node
  echo "export SLURM_CONF=$CONF"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  status) running ;;
  *) echo "usage: $0 {start|stop|status|env}" >&2; exit 1 ;;
esac
