"""Start Ray for GEA: a single local node whose servers listen on loopback only.

Every GEA entry point that needs Ray calls `init_ray` instead of `ray.init`, so no
Ray process accepts connections from other hosts and no usage statistics are sent.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

logger = logging.getLogger(__name__)

LOOPBACK_ADDRESS = "127.0.0.1"

# Ray 2.60 resolves `_node_ip_address="127.0.0.1"` to the host's routable address
# (`ray._private.services.resolve_ip_for_localhost`), and its gRPC servers then listen on
# all interfaces. With RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 Ray treats the machine as a
# single-node setup: the node address stays 127.0.0.1 and every server binds to it.
_LOOPBACK_ENVIRONMENT = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def configure_loopback_environment() -> None:
    """Set the environment variables that keep Ray on loopback, overriding earlier values.

    Ray reads them when `ray` is first imported and passes them on to the processes it
    starts, so this runs when `gea.rl` is imported, before any of its modules imports Ray.
    """
    for key, value in _LOOPBACK_ENVIRONMENT.items():
        if os.environ.get(key, value) != value:
            logger.warning("Overriding %s=%s with %s to keep Ray on loopback.", key, os.environ[key], value)
        os.environ[key] = value


def init_ray(
    num_cpus: Optional[int] = None,
    *,
    num_gpus: Optional[int] = None,
    object_store_memory: Optional[int] = None,
    log_to_driver: bool = False,
    **ray_init_kwargs: Any,
) -> Any:
    """Start a local Ray node bound to 127.0.0.1, or return the running one's context.

    Args:
        num_cpus: CPUs Ray may schedule on; None lets Ray count the machine's cores.
        num_gpus: GPUs Ray may schedule on; None lets Ray detect them.
        object_store_memory: object store size in bytes; None uses Ray's default.
        log_to_driver: whether worker stdout and stderr are copied to this process.
        **ray_init_kwargs: further `ray.init` arguments. Arguments that would expose Ray
            beyond loopback (`address`, `_node_ip_address`, `include_dashboard`,
            `dashboard_host`) raise ValueError.

    Returns:
        The `ray.init` context, or None if Ray was already running in this process.
    """
    forbidden = {"address", "_node_ip_address", "include_dashboard", "dashboard_host"} & set(ray_init_kwargs)
    if forbidden:
        raise ValueError(
            f"init_ray sets {sorted(forbidden)} itself to keep Ray on loopback; remove them from the call."
        )
    if num_cpus is not None and num_cpus < 1:
        raise ValueError(f"num_cpus must be at least 1, got {num_cpus}.")

    configure_loopback_environment()
    import ray
    from ray._private import ray_constants

    if ray.is_initialized():
        logger.info("Ray is already running in this process; reusing it.")
        return None
    if ray_constants.ENABLE_RAY_CLUSTER:
        # `ray` was imported before `gea.rl` set the environment; the constant is read at
        # call time by `ray._private.services.get_node_ip_address`, so setting it still works.
        ray_constants.ENABLE_RAY_CLUSTER = False

    context = ray.init(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        object_store_memory=object_store_memory,
        _node_ip_address=LOOPBACK_ADDRESS,
        include_dashboard=False,
        log_to_driver=log_to_driver,
        **ray_init_kwargs,
    )
    logger.info("Started Ray on %s with %s CPUs.", LOOPBACK_ADDRESS, num_cpus if num_cpus is not None else "all")
    return context
