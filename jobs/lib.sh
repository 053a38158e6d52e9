# shellcheck shell=bash
# Shared part of jobs/train.sbatch and jobs/sweep.sbatch: thread and launcher
# set-up, the signal forwarding that turns SLURM's time-limit warning into a
# clean checkpoint, and the requeue on the trainer's exit status 3.
#
# Sourced by the batch scripts (bash). Also executed once per MPI rank as
#   bash jobs/lib.sh --rank BINARY ARGS...
# which picks OpenMP thread pinning from the CPUs that rank may really use and
# then execs the binary (so signals reach the trainer itself).
#
# Environment read (all optional):
#   SUPAIR_BIN           trainer binary (default: ROOT/build/bin/supair_dist)
#   SUPAIR_LAUNCHER      srun | mpirun (default: srun --mpi=pmix when SLURM has
#                        the pmix plugin, else mpirun)
#   SUPAIR_MPIRUN_ARGS   extra mpirun options (e.g. "--mca btl ^openib")
#   SUPAIR_SRUN_ARGS     extra srun options (e.g. "--cpu-bind=cores")
#   SUPAIR_MAX_REQUEUES  stop requeueing after this many restarts (default: no limit)

# ---- per-rank wrapper ------------------------------------------------------
if [ "${1:-}" = "--rank" ]; then
  shift
  # Pin threads only when this rank's CPU set is exactly its thread count:
  # then the launcher bound the rank to its share and "close" keeps each thread
  # on its own CPU. An unbound rank sees every CPU of the node, and pinning its
  # threads would stack all ranks' threads on the node's first cores.
  if [ -z "${OMP_PROC_BIND:-}" ]; then
    # (nproc itself would answer OMP_NUM_THREADS if set.)
    ncpu=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 0)
    if [ "$ncpu" -eq "${OMP_NUM_THREADS:-1}" ] && [ "$ncpu" -gt 1 ]; then
      export OMP_PROC_BIND=close OMP_PLACES=threads
    else
      export OMP_PROC_BIND=false
    fi
  fi
  exec "$@"
fi

# ---- batch-script side -----------------------------------------------------

sp_log() { echo "[job $(date '+%F %T')] $*"; }

# sp_setup ROOT: sets SP_BIN, SP_NTASKS, SP_THREADS, SP_LAUNCHER and the
# OpenMP environment every rank inherits.
sp_setup() {
  SP_ROOT=$1
  # Trap the warning from here on: a signal during set-up is remembered.
  SP_TRAPPED=0 SP_EARLY=0 SP_PID=
  trap 'sp_on_signal USR1' USR1
  trap 'sp_on_signal TERM' TERM
  SP_BIN=${SUPAIR_BIN:-$SP_ROOT/build/bin/supair_dist}
  if [ ! -x "$SP_BIN" ]; then
    sp_log "error: trainer binary '$SP_BIN' not found or not executable (build it with make, or set SUPAIR_BIN)"
    exit 1
  fi
  SP_NTASKS=${SLURM_NTASKS:-1}
  # One OpenMP thread per CPU of the task; SPN layers and OpenBLAS share the pool.
  SP_THREADS=${SLURM_CPUS_PER_TASK:-1}
  export OMP_NUM_THREADS=$SP_THREADS
  # Every task owns its CPUs in an allocation, so idle OpenMP threads may
  # spin (ACTIVE): the OpenMP build of OpenBLAS shares the same pool, and
  # waking sleeping threads at each of a step's many parallel regions cost
  # SuPAIR 19% at 2 threads (README, "Speed"). A value set by the user wins.
  export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-ACTIVE}
  export OPENBLAS_NUM_THREADS=$SP_THREADS
  # Open MPI refuses root unless told (containers, CI).
  if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

  SP_LAUNCHER=${SUPAIR_LAUNCHER:-}
  if [ -z "$SP_LAUNCHER" ]; then
    if [ -n "${SLURM_JOB_ID:-}" ] && command -v srun >/dev/null 2>&1 \
       && srun --mpi=list 2>&1 | grep -qw pmix; then SP_LAUNCHER=srun
    else SP_LAUNCHER=mpirun; fi
  fi
  case "$SP_LAUNCHER" in
    srun|mpirun) ;;
    *) sp_log "error: SUPAIR_LAUNCHER='$SP_LAUNCHER' (expected srun or mpirun)"; exit 1 ;;
  esac
  sp_log "job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST:-$(hostname -s)}:" \
    "$SP_NTASKS ranks x $SP_THREADS threads, launcher $SP_LAUNCHER, binary $SP_BIN"
}

# sp_launch_cmd ARGS...: fills SP_CMD with the launcher command line that runs
# the trainer with ARGS on every rank.
sp_launch_cmd() {
  local rank=(bash "$SP_ROOT/jobs/lib.sh" --rank "$SP_BIN" train)
  if [ "$SP_LAUNCHER" = srun ]; then
    # SLURM 22.05's srun no longer inherits --cpus-per-task from the batch
    # job: pass it, or every rank would get one CPU.
    # shellcheck disable=SC2206
    SP_CMD=(srun --mpi=pmix --ntasks="$SP_NTASKS" --cpus-per-task="$SP_THREADS" --kill-on-bad-exit=1
            ${SUPAIR_SRUN_ARGS:-} "${rank[@]}" "$@")
  else
    # Bind each rank to its CPUs only when that cannot collide with another
    # job: the job is confined to its CPUs (cgroup/affinity: nproc < all), or
    # owns the whole node. Unconfined shared nodes (task/none) get no binding.
    local bind=(--bind-to none) all mine
    all=$(nproc --all); mine=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
    if [ "$mine" -lt "$all" ] || [ "${SLURM_CPUS_ON_NODE:-0}" -ge "$all" ]; then
      bind=(--map-by "slot:PE=$SP_THREADS" --bind-to core)
    fi
    # shellcheck disable=SC2206
    SP_CMD=(mpirun -np "$SP_NTASKS" "${bind[@]}" -x OMP_NUM_THREADS -x OMP_WAIT_POLICY
            -x OPENBLAS_NUM_THREADS ${SUPAIR_MPIRUN_ARGS:-} "${rank[@]}" "$@")
  fi
}

# Trap for SLURM's warning signal (--signal=B:USR1@T, or `scancel --batch
# --signal=USR1`) and for SIGTERM: ask the trainer to checkpoint and stop.
# mpirun forwards SIGUSR1 to every rank; srun forwards it to its tasks.
sp_on_signal() {
  SP_TRAPPED=1
  if [ -z "${SP_PID:-}" ]; then SP_EARLY=1; sp_log "got SIG$1 before the trainer started"; return; fi
  sp_log "batch script got SIG$1: asking the trainer ($SP_LAUNCHER pid $SP_PID) to checkpoint and stop"
  kill -USR1 "$SP_PID" 2>/dev/null || true
}

# sp_run_and_requeue ARGS...: runs the trainer with ARGS across the allocation,
# forwards signals, and requeues this job when the trainer exits 3 (stopped
# after a clean checkpoint); the requeued job gets the same ARGS, hence the
# same --run DIR, and the trainer resumes from its newest checkpoint.
sp_run_and_requeue() {
  sp_launch_cmd "$@"
  sp_log "running: ${SP_CMD[*]}"
  local rc again
  if [ "$SP_EARLY" = 1 ]; then
    # Warned before the start (a time limit shorter than the warning time):
    # nothing new to checkpoint; the newest checkpoint is the resume point.
    rc=3
    sp_log "not starting the trainer"
  else
    "${SP_CMD[@]}" &
    SP_PID=$!
    # bash's `wait` returns early (status > 128) when a trapped signal
    # arrives: wait again until the launcher has exited and take its status.
    while :; do
      SP_TRAPPED=0
      wait "$SP_PID"; rc=$?
      [ "$SP_TRAPPED" = 1 ] || break
      if kill -0 "$SP_PID" 2>/dev/null; then continue; fi
      wait "$SP_PID" 2>/dev/null; again=$?
      [ "$again" -ne 127 ] && rc=$again
      break
    done
    sp_log "trainer exited with status $rc"
  fi
  trap - USR1 TERM
  if [ "$rc" -eq 3 ]; then
    local n=${SLURM_RESTART_COUNT:-0}
    if [ -z "${SLURM_JOB_ID:-}" ]; then
      sp_log "not under SLURM: not requeueing; rerun the same command to resume"
      exit 3
    fi
    if [ -n "${SUPAIR_MAX_REQUEUES:-}" ] && [ "$n" -ge "$SUPAIR_MAX_REQUEUES" ]; then
      sp_log "restart $n reached SUPAIR_MAX_REQUEUES=$SUPAIR_MAX_REQUEUES: not requeueing"
      exit 3
    fi
    sp_log "checkpoint written: requeueing job $SLURM_JOB_ID (it resumes from the same run directory)"
    # The requeue ends this script at once; SLURM starts the job again after
    # its requeue delay (AuthInfo cred_expire, 120 s by default).
    scontrol requeue "$SLURM_JOB_ID" || { sp_log "error: scontrol requeue failed"; exit 3; }
    sleep 60
    exit 3
  fi
  exit "$rc"
}
