"""Multi-process (multi-host) runs: ``jax.distributed.initialize`` from the run config.

Every process runs the same program. Each builds the same global mesh over all processes'
devices, loads only its own rows of every global batch (`sharding.process_rows`), writes logs
only from process 0, and takes part in every (collective) Orbax checkpoint save and restore.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How to join a multi-process run; unset fields are read from the environment by JAX.

    Attributes:
      enabled: call ``jax.distributed.initialize`` (``parallel.distributed``).
      coordinator_address: ``host:port`` of process 0; "" = JAX_COORDINATOR_ADDRESS or cluster
        auto-detection (TPU pods, SLURM, Open MPI).
      num_processes: total processes; 0 = from the environment.
      process_id: this process's index in ``[0, num_processes)``; -1 = from the environment.
      timeout_s: how long to wait for every process to join.
    """

    enabled: bool = False
    coordinator_address: str = ""
    num_processes: int = 0
    process_id: int = -1
    timeout_s: int = 300

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> DistributedConfig:
        """Reads the run config's ``parallel`` section."""
        return cls(
            enabled=bool(section["distributed"]),
            coordinator_address=str(section["coordinator_address"]),
            num_processes=int(section["num_processes"]),
            process_id=int(section["process_id"]),
        )

    def initialize_kwargs(self) -> dict[str, Any]:
        """Arguments for ``jax.distributed.initialize``; unset values become None (auto)."""
        if self.num_processes < 0 or self.process_id < -1:
            raise ValueError(
                f"parallel.num_processes={self.num_processes} and parallel.process_id="
                f"{self.process_id} must be >= 0 (0 and -1 mean: read them from the environment)."
            )
        if self.num_processes and self.process_id >= self.num_processes:
            raise ValueError(
                f"parallel.process_id={self.process_id} must be below parallel.num_processes="
                f"{self.num_processes}."
            )
        kwargs: dict[str, Any] = {
            "coordinator_address": self.coordinator_address or None,
            "num_processes": self.num_processes or None,
            "process_id": None if self.process_id == -1 else self.process_id,
            "initialization_timeout": self.timeout_s,
        }
        if is_loopback(self.coordinator_address):
            # JAX binds the coordinator to every interface by default; a coordinator named by a
            # loopback address serves only local processes, so it need not be reachable.
            kwargs["coordinator_bind_address"] = self.coordinator_address
        return kwargs


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` names this machine only (127.0.0.0/8, ::1 or localhost)."""
    host = address.rsplit(":", 1)[0].strip("[]") if address else ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def initialize(config: DistributedConfig) -> bool:
    """Joins the multi-process run described by ``config``; must run before any JAX computation.

    Returns:
      Whether this call initialised ``jax.distributed`` (False when disabled or when the
      launcher already did).
    """
    if not config.enabled or jax.distributed.is_initialized():
        return False
    kwargs = config.initialize_kwargs()
    jax.distributed.initialize(**kwargs)
    log.info(
        "Process %d of %d joined %s; %d local and %d global devices.",
        jax.process_index(), jax.process_count(), kwargs["coordinator_address"] or "(auto)",
        jax.local_device_count(), jax.device_count(),
    )  # fmt: skip
    return True


def is_main_process() -> bool:
    """True on process 0, the one that writes logs, metrics and other run files."""
    return jax.process_index() == 0


def any_process(flag: bool) -> bool:
    """True on every process if ``flag`` is true on any (a collective: all processes call it).

    A stop request (SIGTERM) may reach only some processes; acting on it alone would leave the
    others waiting in the next step's collectives, so the loop agrees on it first.
    """
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))
