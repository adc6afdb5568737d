#!/usr/bin/env bash
# Puts the s2s_jax code on every worker of a TPU VM or slice and installs it with jax[tpu].
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<'EOF'
Usage: install.sh --name NAME --zone ZONE (--source DIR | --repo URL [--ref REF]) [options]

On every worker: replaces ~/REMOTE_DIR with the code, creates the virtual environment ~/VENV
(kept between installs) and runs `pip install -e ~/REMOTE_DIR 'jax[tpu]'`.

Required:
  --name NAME               TPU name (env S2S_TPU_NAME)
  --zone ZONE               zone it runs in (env S2S_TPU_ZONE)
  --source DIR              copy this local checkout (uncommitted edits included; .venv, runs,
                            caches and build files are left out) as one tarball, or
  --repo URL                git clone URL on every worker (it needs access to the repository)

Options:
  --ref REF                 with --repo: branch, tag or commit to check out
  --project PROJECT         Google Cloud project (env S2S_TPU_PROJECT; default: gcloud config)
  --exclude PATTERN         with --source: also leave out PATTERN (tar --exclude; repeatable)
  --jax SPEC                the JAX requirement (default 'jax[tpu]'; e.g. 'jax[tpu]==0.7.2')
  --remote-dir DIR          code directory under $HOME on the workers (default s2s_jax)
  --venv DIR                virtual environment under $HOME on the workers (default s2s_venv)
  --dry-run                 print the commands, run nothing
  -h, --help                show this help

Examples:
  install.sh --name s2s-v4 --zone us-central2-b --source .
  install.sh --name s2s-v4 --zone us-central2-b --repo https://github.com/ORG/s2s_jax --ref main
EOF
}

SOURCE="" REPO="" REF="" JAX_SPEC="jax[tpu]"
REMOTE_DIR=$DEFAULT_REMOTE_DIR VENV=$DEFAULT_VENV
EXCLUDES=(--exclude=.venv --exclude=runs --exclude=__pycache__ --exclude='*.egg-info'
  --exclude=.pytest_cache --exclude=.ruff_cache --exclude=build --exclude=dist)
while (($#)); do
  case $1 in --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;; esac
  common_option "$@"
  if ((CONSUMED)); then
    shift "$CONSUMED"
    continue
  fi
  case $1 in
    --source) SOURCE=$(value "$@"); shift ;;
    --repo) REPO=$(value "$@"); shift ;;
    --ref) REF=$(value "$@"); shift ;;
    --exclude) PATTERN=$(value "$@"); EXCLUDES+=("--exclude=$PATTERN"); shift ;;
    --jax) JAX_SPEC=$(value "$@"); shift ;;
    --remote-dir) REMOTE_DIR=$(value "$@"); shift ;;
    --venv) VENV=$(value "$@"); shift ;;
    *) die "unknown option '$1'; see --help" ;;
  esac
  shift
done

require_tpu
check_home_path "$REMOTE_DIR" --remote-dir
check_home_path "$VENV" --venv
if [[ -n $SOURCE && -n $REPO ]]; then
  die "--source and --repo exclude each other: copy a local checkout or clone one, not both"
fi
require "$SOURCE$REPO" "--source DIR or --repo URL"
if [[ -n $REF && -z $REPO ]]; then
  die "--ref needs --repo (with --source the checkout is copied as it is)"
fi
SPEC_CHARS='^[][A-Za-z0-9_.,=<>!~*+ -]+$' # a requirement, safe inside "..." on the workers
if [[ ! $JAX_SPEC =~ $SPEC_CHARS ]]; then
  die "--jax '$JAX_SPEC' is not a pip requirement (e.g. --jax 'jax[tpu]==0.7.2')"
fi
if [[ -n $SOURCE && ! -f $SOURCE/pyproject.toml ]]; then
  die "--source '$SOURCE' is not the s2s_jax checkout (no pyproject.toml there)"
fi

# The worker-side commands. Debian images may lack the venv module; it is installed on demand.
R=$REMOTE_DIR
SETUP="python3 -m venv $VENV || { sudo apt-get update -q && sudo apt-get install -y -q"
SETUP+=" python3-venv && python3 -m venv $VENV; }; $VENV/bin/pip install -q -U pip;"
SETUP+=" $VENV/bin/pip install -q -e ./$R \"$JAX_SPEC\";"
SETUP+=" $VENV/bin/python -c \"import jax, s2s_jax\" && echo \"\$(hostname): s2s_jax installed\""

if [[ -n $REPO ]]; then
  FETCH="rm -rf $R; git clone -q $(quote "$REPO") $R"
  if [[ -n $REF ]]; then
    FETCH+="; git -C $R checkout -q $(quote "$REF")"
  fi
  on_workers all "set -e; $FETCH; $SETUP"
else
  # One tarball, not `scp --recurse`: a single transfer per worker, with the excludes applied.
  TARBALL="${TMPDIR:-/tmp}"
  TARBALL="${TARBALL%/}/s2s_jax-$TPU_NAME.tgz"
  run tar -C "$SOURCE" "${EXCLUDES[@]}" -czf "$TARBALL" .
  run gcloud compute tpus tpu-vm scp "$TARBALL" "$TPU_NAME:$R.tgz" "${SCOPE[@]}" --worker=all
  on_workers all "set -e; rm -rf $R; mkdir -p $R; tar -xzf $R.tgz -C $R; rm -f $R.tgz; $SETUP"
  run rm -f "$TARBALL"
fi
