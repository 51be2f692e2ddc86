"""The aiobotocore client an S3 origin fetches with: our stage-clocked HTTP session under it,
botocore's own timeouts as backstops past our deadlines, bounded retries, and one parsed
service model per process."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.loaders import Loader, create_loader

from proxy.config import Deadlines
from proxy.origins.s3_stages import StagedSession

KEEPALIVE_SECONDS = 4.0  # as for HTTP origins: shorter than the idle timeouts stores use
# Attempts per fetch (the first and two retries); all of them share the total deadline.
MAX_ATTEMPTS = 3


def new_client(
    deadlines: Deadlines,
    *,
    endpoint_url: str | None,
    region: str | None,
    addressing_style: str,
    ca_file: Path | None,
) -> Any:
    """An S3 client, as an async context manager. Credentials and, unless configured, the
    region come from the standard AWS chain."""
    config = AioConfig(
        http_session_cls=StagedSession,
        connector_args={"keepalive_timeout": KEEPALIVE_SECONDS},
        # Backstops only, past ours. aiohttp applies the connect one only to a TLS
        # tunnel through an HTTP proxy; the read one to every socket read.
        connect_timeout=deadlines.connect + deadlines.tls + 1,
        read_timeout=max(deadlines.headers, deadlines.read) + 1,
        retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        s3={"addressing_style": addressing_style},
        warm_up_loader_caches=True,
        user_agent_extra="pixcache",
    )
    return _session().create_client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        config=config,
        verify=str(ca_file) if ca_file is not None else None,
    )


def _session() -> AioSession:
    """A new session (credentials resolved afresh, in the running loop) on the process's one
    loader: each session would otherwise parse botocore's S3 model, megabytes of JSON, again."""
    session = get_session()
    session.register_component("data_loader", _loader(session.get_config_variable("data_path")))
    return session


@functools.cache
def _loader(data_path: str | None) -> Loader:
    return create_loader(data_path)
