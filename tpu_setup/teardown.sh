#!/usr/bin/env bash
# Deletes a Cloud TPU VM or pod slice, or the queued resource that created it.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<'EOF'
Usage: teardown.sh --name NAME --zone ZONE [options]

Deletes the TPU (all workers). Checkpoints and logs in the gs:// workdir are kept; files on
the workers' disks are lost.

Required:
  --name NAME               TPU name (env S2S_TPU_NAME)
  --zone ZONE               zone it runs in (env S2S_TPU_ZONE)

Options:
  --project PROJECT         Google Cloud project (env S2S_TPU_PROJECT; default: gcloud config)
  --queued                  it was created with create.sh --queued: delete the queued resource
                            and, with --force, the TPU it holds
  --queued-resource ID      queued resource name (default: the TPU name)
  --yes                     do not ask for confirmation (gcloud --quiet)
  --dry-run                 print the gcloud command, run nothing
  -h, --help                show this help

Examples:
  teardown.sh --name s2s-v4 --zone us-central2-b --queued
  teardown.sh --name s2s-v5e --zone us-west4-a --yes
EOF
}

QUEUED=0 QUEUED_RESOURCE="" QUIET=()
while (($#)); do
  case $1 in --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;; esac
  common_option "$@"
  if ((CONSUMED)); then
    shift "$CONSUMED"
    continue
  fi
  case $1 in
    --queued) QUEUED=1 ;;
    --queued-resource) QUEUED_RESOURCE=$(value "$@"); QUEUED=1; shift ;;
    --yes) QUIET=(--quiet) ;;
    *) die "unknown option '$1'; see --help" ;;
  esac
  shift
done

require_tpu
if ((QUEUED)); then
  run gcloud compute tpus queued-resources delete "${QUEUED_RESOURCE:-$TPU_NAME}" \
    "${SCOPE[@]}" --force ${QUIET[@]+"${QUIET[@]}"}
else
  run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${SCOPE[@]}" ${QUIET[@]+"${QUIET[@]}"}
fi
