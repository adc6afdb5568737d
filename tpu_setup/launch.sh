#!/usr/bin/env bash
# Starts `s2s train` on every TPU worker in the background; follows, inspects or stops it.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<'EOF'
Usage: launch.sh --name NAME --zone ZONE --config EXPERIMENT --workdir gs://BUCKET/DIR
                 [options] [-- --config.a.b=v ...]
       launch.sh --name NAME --zone ZONE (--follow [--worker W] | --status | --stop)

Runs on every worker, detached (nohup), logging to ~/REMOTE_DIR/logs/train.log there:
  s2s train --config EXPERIMENT --workdir WORKDIR --config.parallel.distributed=true [overrides]
Each worker is one JAX process; jax.distributed finds the others itself on TPU. Relaunching
the same command resumes from the latest checkpoint in WORKDIR.

Required to launch:
  --name NAME               TPU name (env S2S_TPU_NAME)
  --zone ZONE               zone it runs in (env S2S_TPU_ZONE)
  --config EXPERIMENT       experiment file, optionally :variant (e.g. experiments/x.py:tiny)
  --workdir WORKDIR         run directory every worker shares: a gs:// path

Options:
  --project PROJECT         Google Cloud project (env S2S_TPU_PROJECT; default: gcloud config)
  --env KEY=VALUE           extra environment for s2s on the workers (repeatable);
                            always set: PYTHONUNBUFFERED=1 JAX_PLATFORMS=tpu
  --local-workdir           accept a WORKDIR that is not gs:// (a single-host TPU, or a
                            filesystem mounted at the same path on every worker)
  --remote-dir DIR          code directory under $HOME on the workers (default s2s_jax)
  --venv DIR                virtual environment under $HOME on the workers (default s2s_venv)
  --follow                  follow the training log (Ctrl-C stops following, not training)
  --worker W                with --follow: which worker's log: an index (default 0, the
                            one that reports progress), 1,4, 1-3 or all
  --status                  show on each worker whether training runs, and its last log lines
  --stop                    send SIGTERM: training writes a checkpoint and exits
  --dry-run                 print the gcloud command, run nothing
  -h, --help                show this help

Arguments after "--" are config overrides passed to `s2s train`.

Examples:
  launch.sh --name s2s-v4 --zone us-central2-b --config experiments/reverse_transformer.py \
    --workdir gs://my-bucket/runs/rt -- --config.parallel.fsdp=4 --config.train.num_steps=20000
  launch.sh --name s2s-v4 --zone us-central2-b --follow
EOF
}

MODE=launch CONFIG="" WORKDIR="" WORKER=0 LOCAL_WORKDIR=0
ENVS=(PYTHONUNBUFFERED=1 JAX_PLATFORMS=tpu)
REMOTE_DIR=$DEFAULT_REMOTE_DIR VENV=$DEFAULT_VENV

set_mode() {
  [[ $MODE == launch || $MODE == "$1" ]] || die "--$MODE and --$1 exclude each other"
  MODE=$1
}

while (($#)); do
  case $1 in --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;; esac
  common_option "$@"
  if ((CONSUMED)); then
    shift "$CONSUMED"
    continue
  fi
  case $1 in
    --config) CONFIG=$(value "$@"); shift ;;
    --workdir) WORKDIR=$(value "$@"); shift ;;
    --env) PAIR=$(value "$@"); ENVS+=("$PAIR"); shift ;;
    --local-workdir) LOCAL_WORKDIR=1 ;;
    --remote-dir) REMOTE_DIR=$(value "$@"); shift ;;
    --venv) VENV=$(value "$@"); shift ;;
    --worker) WORKER=$(value "$@"); shift ;;
    --follow | --status | --stop) set_mode "${1#--}" ;;
    --) shift && break ;;
    --config.*) die "config overrides go after \"--\": ... -- $1=VALUE" ;;
    *) die "unknown option '$1'; see --help" ;;
  esac
  shift
done

# check_launch_args: the arguments only a launch needs.
check_launch_args() {
  require "$CONFIG" --config
  require "$WORKDIR" --workdir
  if [[ $WORKDIR != gs://* ]] && ((!LOCAL_WORKDIR)); then
    die "--workdir '$WORKDIR' is not shared by the workers: use a gs:// path" \
      "(e.g. gs://my-bucket/runs/x), or pass --local-workdir for a single-host TPU"
  fi
  local pair
  for pair in "${ENVS[@]}"; do
    [[ $pair =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env '$pair' is not KEY=VALUE"
  done
}

require_tpu
check_home_path "$REMOTE_DIR" --remote-dir
check_home_path "$VENV" --venv
if [[ ! $WORKER =~ ^(all|[0-9]+([,-][0-9]+)*)$ ]]; then
  die "--worker '$WORKER' must be all, an index, a list (1,4) or a range (1-3)"
fi
if [[ $MODE != launch && $# -gt 0 ]]; then
  die "config overrides only go with a launch, not with --$MODE"
fi

# Worker-side shell snippets, expanded on the workers; every remote command starts in the code
# directory. The pid file lets --status and --stop find the trainer.
IN_DIR="set -e; cd $REMOTE_DIR; mkdir -p logs"
# shellcheck disable=SC2016
RUNNING='[ -f logs/train.pid ] && kill -0 "$(cat logs/train.pid)" 2>/dev/null' HOST='$(hostname)'

# launch_command OVERRIDE...: the worker command line that starts training, detached.
launch_command() {
  local train cmd
  train="env $(quote "${ENVS[@]}") \$HOME/$VENV/bin/s2s train"
  train+=" $(quote --config "$CONFIG" --workdir "$WORKDIR" --config.parallel.distributed=true "$@")"
  cmd="$IN_DIR; if $RUNNING; then echo \"$HOST: s2s train is already running;"
  cmd+=" stop it with launch.sh --stop\" >&2; exit 1; fi"
  cmd+="; echo \"--- launched \$(date -u)\" >> logs/train.log"
  # `nohup ... &` alone in its list, so $! is the trainer itself, not a subshell.
  cmd+="; nohup $train >> logs/train.log 2>&1 < /dev/null & echo \$! > logs/train.pid"
  cmd+="; echo \"$HOST: started s2s train, log in ~/$REMOTE_DIR/logs/train.log\""
  printf '%s' "$cmd"
}

# stop_command: SIGTERM makes the training loop write a checkpoint and exit.
stop_command() {
  printf '%s' "$IN_DIR; if $RUNNING; then kill -TERM \"\$(cat logs/train.pid)\";"
  printf '%s' " echo \"$HOST: sent SIGTERM; s2s train checkpoints and exits\";"
  printf '%s' " else echo \"$HOST: not running\"; fi"
}

# status_command: whether training runs on the worker, and the end of its log.
status_command() {
  printf '%s' "$IN_DIR; if $RUNNING; then echo \"$HOST: running\";"
  printf '%s' " else echo \"$HOST: not running\"; fi; tail -n 3 logs/train.log 2>/dev/null || true"
}

case $MODE in
  launch)
    check_launch_args
    on_workers all "$(launch_command "$@")"
    ;;
  follow) on_workers "$WORKER" "$IN_DIR; tail -n 100 -F logs/train.log" ;;
  status) on_workers all "$(status_command)" ;;
  stop) on_workers all "$(stop_command)" ;;
esac
