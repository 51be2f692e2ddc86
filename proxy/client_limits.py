"""What a worker allows its client connections: the limits each one obeys (enforced by
proxy/connections.py), and how many connections fit its open-files limit (RLIMIT_NOFILE)
next to everything else that holds a descriptor."""

from __future__ import annotations

import resource
from dataclasses import dataclass

import structlog

from proxy.config import Config, ConfigError
from proxy.hot import MAX_HOT_ENTRIES

log = structlog.get_logger("pixcache.connections")

DEFAULT_MAX_CONNECTIONS = 1000
ADMIN_MAX_CONNECTIONS = 32
# Descriptors a worker uses besides its client sockets: listening sockets, the event
# loop, the index database, logs, thread pools and metrics files.
# Hot hits keep a body file open per entry, and a sealed copy for large bodies.
BASE_DESCRIPTORS = 128 + 2 * MAX_HOT_ENTRIES
# Each fill may hold a temp file, an origin socket, its key's lock file and a pooled socket.
DESCRIPTORS_PER_FILL = 4
# Each client connection is a socket, plus the body file of a hit while it is sent.
DESCRIPTORS_PER_CONNECTION = 2


@dataclass(frozen=True)
class ClientLimits:
    header_timeout: float  # seconds for a whole request head
    idle_timeout: float  # seconds a keep-alive connection may wait for its next request
    send_timeout: float  # seconds a response may wait for the client to take more bytes
    max_head_bytes: int  # request line, fields and the empty line that ends them
    max_header_fields: int
    max_connections: int


def client_limits(config: Config) -> ClientLimits:
    return ClientLimits(
        header_timeout=config.client_header_timeout,
        idle_timeout=config.client_idle_timeout,
        send_timeout=config.client_send_timeout,
        max_head_bytes=config.max_header_size,
        max_header_fields=config.max_header_fields,
        max_connections=config.max_connections or DEFAULT_MAX_CONNECTIONS,
    )


def descriptors_needed(connections: int, max_fills: int) -> int:
    return (
        DESCRIPTORS_PER_CONNECTION * (connections + ADMIN_MAX_CONNECTIONS)
        + DESCRIPTORS_PER_FILL * max_fills
        + BASE_DESCRIPTORS
    )


def plan_connections(config: Config) -> int:
    """The number of client connections each worker may hold, within its descriptor limit
    (RLIMIT_NOFILE), whose soft value is raised toward the hard one if that is needed.
    Without --max-connections the default is lowered to what fits; a value that was set
    and does not fit is a configuration error."""
    wanted = config.max_connections or DEFAULT_MAX_CONNECTIONS
    needed = descriptors_needed(wanted, config.max_fills)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        if raised > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    spare = soft - descriptors_needed(0, config.max_fills)
    fitting = spare // DESCRIPTORS_PER_CONNECTION
    if config.max_connections is not None or fitting < 1:
        raise ConfigError(
            "max_connections",
            f"{wanted} connections need about {needed} open files per process, and the "
            f"limit (ulimit -n) is {soft}: raise the limit or lower --max-connections",
        )
    log.warning("max_connections_lowered", to=fitting, open_files_limit=soft)
    return fitting
