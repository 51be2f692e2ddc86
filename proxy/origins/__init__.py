"""Origins: where misses are fetched from. Each maps its library's errors to proxy.errors."""

from __future__ import annotations

from proxy.config import Config
from proxy.origins.base import Origin, OriginResponse
from proxy.origins.file import FileOrigin
from proxy.origins.http import HttpOrigin

__all__ = ["Origin", "OriginResponse", "make_origin"]


def make_origin(config: Config) -> Origin:
    if config.origin.scheme == "file":
        assert config.origin.root is not None
        return FileOrigin(config.origin.root)
    return HttpOrigin(config.origin.base_url, config.deadlines, ca_file=config.origin_ca_file)
