#!/usr/bin/env bash
# Creates a Cloud TPU VM or pod slice, directly or through a queued resource.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "$0")/common.sh"

usage() {
  cat <<'EOF'
Usage: create.sh --name NAME --zone ZONE --accelerator-type TYPE [options] [-- GCLOUD_FLAGS...]

Creates a TPU VM or pod slice (every worker of a slice is created with it).

Required:
  --name NAME               TPU name (env S2S_TPU_NAME)
  --zone ZONE               e.g. us-central2-b, us-west4-a (env S2S_TPU_ZONE)
  --accelerator-type TYPE   e.g. v4-8, v4-32, v5litepod-16, v5p-8, v6e-8

Options:
  --project PROJECT         Google Cloud project (env S2S_TPU_PROJECT; default: gcloud config)
  --version VERSION         TPU runtime version; default by TPU generation:
                            v2/v3/v4 tpu-ubuntu2204-base, v5litepod/v5e v2-alpha-tpuv5-lite,
                            v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e
  --queued                  request through a queued resource (waits in Google's queue until
                            capacity exists; the recommended path for slices and Spot)
  --queued-resource ID      queued resource name (default: the TPU name)
  --spot                    Spot capacity: cheaper, can be preempted at any time
  --reserved                use the project's reservation
  --dry-run                 print the gcloud command, run nothing
  -h, --help                show this help

Arguments after "--" are passed to gcloud unchanged (e.g. -- --network=my-net).

Examples:
  create.sh --name s2s-v4 --zone us-central2-b --accelerator-type v4-32 --queued --spot
  create.sh --name s2s-v5e --zone us-west4-a --accelerator-type v5litepod-16 --project my-proj
EOF
}

# default_version TYPE: the runtime image Google recommends for JAX on that TPU generation.
default_version() {
  case $1 in
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) die "no default runtime version for accelerator type '$1'; pass --version" ;;
  esac
}

ACCELERATOR_TYPE="" VERSION="" QUEUED=0 QUEUED_RESOURCE="" CAPACITY=""
while (($#)); do
  case $1 in --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;; esac
  common_option "$@"
  if ((CONSUMED)); then
    shift "$CONSUMED"
    continue
  fi
  case $1 in
    --accelerator-type) ACCELERATOR_TYPE=$(value "$@"); shift ;;
    --version) VERSION=$(value "$@"); shift ;;
    --queued) QUEUED=1 ;;
    --queued-resource) QUEUED_RESOURCE=$(value "$@"); QUEUED=1; shift ;;
    --spot | --reserved)
      [[ -z $CAPACITY || $CAPACITY == "$1" ]] || die "--spot and --reserved exclude each other"
      CAPACITY=$1
      ;;
    --) shift && break ;;
    *) die "unknown option '$1'; see --help" ;;
  esac
  shift
done

require_tpu
require "$ACCELERATOR_TYPE" --accelerator-type
VERSION=${VERSION:-$(default_version "$ACCELERATOR_TYPE")}
EXTRA=(${CAPACITY:+"$CAPACITY"} "$@")

if ((QUEUED)); then
  QUEUED_RESOURCE=${QUEUED_RESOURCE:-$TPU_NAME}
  run gcloud compute tpus queued-resources create "$QUEUED_RESOURCE" "${SCOPE[@]}" \
    --node-id="$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
    --runtime-version="$VERSION" ${EXTRA[@]+"${EXTRA[@]}"}
  info "queued; the TPU exists once the state is ACTIVE:" \
    "gcloud compute tpus queued-resources describe $QUEUED_RESOURCE ${SCOPE[*]}"
else
  run gcloud compute tpus tpu-vm create "$TPU_NAME" "${SCOPE[@]}" \
    --accelerator-type="$ACCELERATOR_TYPE" --version="$VERSION" ${EXTRA[@]+"${EXTRA[@]}"}
fi
