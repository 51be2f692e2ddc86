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
        return FileOrigin(config.origin.root, config.deadlines)
    if config.origin.scheme == "s3":
        # Imported here: botocore takes longer to import than the rest of pixcache, and
        # every process start (each worker's too) would pay it for an http or file origin.
        from proxy.origins.s3 import S3Origin

        return S3Origin(
            config.origin.bucket,
            config.origin.prefix,
            config.deadlines,
            endpoint_url=config.s3_endpoint_url,
            region=config.s3_region,
            addressing_style=config.s3_addressing_style,
            default_cache_control=config.s3_default_cache_control,
            not_found_cache_control=config.s3_not_found_cache_control,
            ca_file=config.origin_ca_file,
        )
    return HttpOrigin(config.origin.base_url, config.deadlines, ca_file=config.origin_ca_file)
