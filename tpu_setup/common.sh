# shellcheck shell=bash
# Helpers shared by the tpu_setup scripts: errors, shell quoting, the dry-run runner, the
# options every TPU script takes and the gcloud command prefixes built from them.
#
# Sourced, never executed. Kept to bash 3.2 (the macOS /bin/bash): no mapfile, no ${x@Q}, and
# possibly-empty arrays are expanded as ${a[@]+"${a[@]}"} because `set -u` rejects "${a[@]}"
# on an empty array before bash 4.4.

# Variables set here are read by the scripts that source this file:
# shellcheck disable=SC2034
set -euo pipefail

SCRIPT_NAME=$(basename "$0")

# Defaults shared by install.sh and launch.sh: paths on every TPU worker, relative to $HOME.
DEFAULT_REMOTE_DIR=s2s_jax
DEFAULT_VENV=s2s_venv

# The options every TPU script takes; the environment variables let a shell set them once.
DRY_RUN=0
TPU_NAME=${S2S_TPU_NAME:-}
ZONE=${S2S_TPU_ZONE:-}
PROJECT=${S2S_TPU_PROJECT:-}

die() {
  echo "$SCRIPT_NAME: error: $*" >&2
  exit 2
}

info() {
  echo "$SCRIPT_NAME: $*" >&2
}

# quote ARG...: prints the arguments as one line that a POSIX shell splits back into them.
# Same rules as Python's shlex.quote, so tests can compare lines with shlex.join.
quote() {
  local safe='^[A-Za-z0-9_@%+=:,./-]+$' sq="'" escaped="'\"'\"'" line="" arg
  for arg in "$@"; do
    if [[ $arg =~ $safe ]]; then
      line+=" $arg"
    else
      line+=" '${arg//$sq/$escaped}'"
    fi
  done
  printf '%s\n' "${line# }"
}

# run CMD [ARG...]: with --dry-run prints the command (quoted, one line, on stdout) and runs
# nothing; otherwise echoes it to stderr, like `set -x`, and runs it.
run() {
  if ((DRY_RUN)); then
    quote "$@"
  else
    echo "+ $(quote "$@")" >&2
    "$@"
  fi
}

# value OPTION [NEXT...]: prints the value that follows OPTION, or fails naming the option.
# Call as `X=$(value "$@")`: `set -e` stops the script when it fails.
value() {
  if [[ $# -lt 2 || -z $2 || $2 == --* ]]; then
    die "$1 needs a value (e.g. $1 VALUE); see --help"
  fi
  printf '%s' "$2"
}

# require VALUE OPTION [ENV_VAR]: fails when a required option was not given.
require() {
  if [[ -z $1 ]]; then
    die "missing required argument $2${3:+ (or set $3)}; see --help"
  fi
}

# common_option ARG...: handles the options all TPU scripts share and sets CONSUMED to the
# number of arguments used (0 when "$1" is not one of them). The script defines usage().
common_option() {
  CONSUMED=2
  case $1 in
    --name) TPU_NAME=$(value "$@") ;;
    --zone) ZONE=$(value "$@") ;;
    --project) PROJECT=$(value "$@") ;;
    --dry-run) DRY_RUN=1 CONSUMED=1 ;;
    -h | --help) usage && exit 0 ;;
    *) CONSUMED=0 ;;
  esac
}

# check_home_path VALUE OPTION: worker paths are plain relative paths under $HOME, so remote
# command lines can use them unquoted.
check_home_path() {
  if [[ ! $1 =~ ^[A-Za-z0-9_][A-Za-z0-9_./-]*$ ]]; then
    die "$2 '$1' must be a path relative to \$HOME on the workers, without spaces or quotes"
  fi
}

# require_tpu: checks --name and --zone, sets SCOPE (the gcloud --zone/--project flags) and
# checks that gcloud exists when commands will really run.
require_tpu() {
  require "$TPU_NAME" --name S2S_TPU_NAME
  require "$ZONE" --zone S2S_TPU_ZONE
  SCOPE=(--zone="$ZONE")
  if [[ -n $PROJECT ]]; then
    SCOPE+=(--project="$PROJECT")
  fi
  if ((!DRY_RUN)) && ! command -v gcloud >/dev/null; then
    die "gcloud not found on PATH; install the Google Cloud CLI (https://cloud.google.com/sdk)"
  fi
}

# on_workers WORKERS COMMAND: runs one shell command line on TPU workers (all, 0, 1,4 or 1-3).
on_workers() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${SCOPE[@]}" --worker="$1" --command="$2"
}
