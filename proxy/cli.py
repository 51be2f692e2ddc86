"""The `pixcache` command."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from proxy import demo_cmd, purge_cmd, verify_cmd, warm_cmd
from proxy.config import SETTINGS, Config, ConfigError, build_config
from proxy.logs import configure_logging
from storage import Store

# proxy.app (and with it prometheus-client) is imported only once the configuration is
# known: with several workers, the metrics must be created in multiprocess mode.

HELP = {
    "origin": "where misses are fetched: http(s)://host[:port][/prefix], s3://BUCKET[/PREFIX] "
    "or file://DIR",
    "listen": "HOST:PORT to serve on (default 127.0.0.1:8080)",
    "cache_dir": "directory of the disk cache",
    "connect_timeout": "seconds for the TCP connect to the origin (default 5)",
    "tls_timeout": "seconds for the TLS handshake with the origin (default 5)",
    "header_timeout": "seconds from sending the request to the response headers (default 30)",
    "read_timeout": "longest gap in seconds between two body chunks (default 30)",
    "total_timeout": "seconds for a whole origin fetch, body included (default 300)",
    "origin_ca_file": "PEM file of CA certificates trusted for an https origin",
    "s3_endpoint_url": "S3 endpoint for MinIO, Ceph, R2 and the like (default: AWS)",
    "s3_region": "S3 region (default: from AWS_REGION or the AWS profile)",
    "s3_addressing_style": "S3 bucket addressing: auto, path or virtual (default auto)",
    "s3_default_cache_control": "Cache-Control for S3 objects that have none "
    "(default 'public, max-age=3600'; empty: none)",
    "s3_not_found_cache_control": "Cache-Control for a missing S3 key "
    "(default empty: a 404 is not stored)",
    "workers": "worker processes sharing the port and the cache (default 1)",
    "max_size": "most bytes the cache may hold, e.g. 10G (default: no limit)",
    "min_free": "bytes that must stay free on the cache's filesystem, e.g. 1G (default 0)",
    "max_object_size": "larger objects are proxied, not stored, e.g. 512M (default: no limit)",
    "stale_grace": "seconds an entry is kept past its expiry (default 86400)",
    "scrub_rate": "bytes per second the scrubber re-verifies, e.g. 10M (default 4M; 0: off)",
    "verify_on_hit_max_size": "bodies up to this size are checksummed when read for a hit and "
    "sent from the bytes checked (default 1M; 0: check sizes only; at most 64M)",
    "hot_cache_size": "checked bodies each worker keeps in memory for its next hits of the "
    "same entries, which then cost a stat and an fstat (default 16M; 0: off; at most 1G)",
    "grace": "seconds a stale entry may be served while the origin fails (default 0)",
    "max_ttl": "longest freshness lifetime, in seconds, any stored response gets, whatever "
    "the origin says (default: no bound; 0: every hit is revalidated first)",
    "max_error_ttl": "longest freshness lifetime, in seconds, of an error response (status "
    "400 and up), so an error cannot be pinned for long (default 60)",
    "default_ttl": "freshness lifetime, in seconds, of a response that may be cached but gives "
    "no lifetime (no max-age, Expires or Last-Modified) (default 0: none)",
    "verify_images": "off, header (probe image headers, the default) or decode (also decode "
    "whole images before storing them)",
    "max_image_width": "widest image accepted, in pixels (default 16384)",
    "max_image_height": "tallest image accepted, in pixels (default 16384)",
    "max_image_pixels": "most pixels per frame (default 50000000)",
    "max_image_frames": "most animation frames (default 100)",
    "refuse_invalid_images": "answer 422 for a body that claims to be an image and is not "
    "(default false: serve it, never store it)",
    "image_probe_bytes": "most bytes of a body held back until the image guard has judged "
    "it; an image whose header is not within them gets 422 (default 1M; at most 64M)",
    "image_probe_seconds": "longest a body is held back until the image guard has judged "
    "it; past that, 422 (default 5)",
    "max_fills": "origin fills in flight at once (default 64)",
    "fill_queue": "fills that may wait for a slot; past that, 503 (default 256)",
    "max_rss": "resident memory above which new fills get 503, e.g. 2G (default: none)",
    "admin_listen": "HOST:PORT of the admin listener (default 127.0.0.1:8081)",
    "admin_token": "bearer token the admin listener requires (required off loopback)",
    "tag_header": "response field whose words tag an entry for purges (default Surrogate-Key)",
    "shutdown_grace": "seconds requests in flight get to finish on SIGTERM (default 30)",
    "shutdown_delay": "seconds pixcache keeps serving after SIGTERM, its readiness probe "
    "saying 503, so load balancers stop sending before it stops (default 0)",
    "liveness_path": "path on the serving port that pixcache answers 200 while it serves, "
    "without the admin token, e.g. /_pixcache/health (default: off)",
    "readiness_path": "path on the serving port that pixcache answers 200 when ready and 503 "
    "from SIGTERM on, e.g. /_pixcache/ready (default: off)",
    "x_accel_redirect": "URI prefix of nginx's internal location for the cache's bodies/, "
    "e.g. /_pixcache/bodies/: hits asked for by nginx (X-Sendfile-Type: X-Accel-Redirect) "
    "are answered with X-Accel-Redirect, and nginx sends the body (default: off)",
    "cache_control_field": "targeted Cache-Control field for this cache, RFC 9213 "
    "(default Pixcache-Cache-Control; CDN-Cache-Control is honoured after it)",
    "unkeyed_request_fields": "request fields a shared fill never forwards, comma-separated "
    "(default: X-Forwarded-Host, X-Original-URL, X-Rewrite-URL, Forwarded, "
    "X-HTTP-Method-Override and their kin; empty: forward them all)",
    "client_header_timeout": "seconds a client has to send a whole request head; then 408 "
    "(default 10)",
    "client_idle_timeout": "seconds a keep-alive client connection may wait for its next "
    "request (default 60)",
    "client_send_timeout": "seconds a response may wait for a client that has stopped "
    "reading; then the connection is cut (default 60)",
    "max_header_size": "largest request head (request line and fields), e.g. 64K; larger "
    "gets 431 (default 64K)",
    "max_header_fields": "most header fields in a request; more gets 431 (default 100)",
    "max_connections": "client connections per worker; past it the longest-idle one is "
    "closed, or 503 if none is idle (default 1000, lowered to fit ulimit -n)",
    "sort_query_params": "sort query parameters by name (the values of one name keep their "
    "order) and write percent-escapes canonically, before keying and fetching (default false; "
    "see docs/cache-key.md)",
    "drop_query_params": "query parameters removed before keying and fetching, as glob "
    "patterns, e.g. 'utm_*,fbclid,gclid' (default: none)",
    "signed_query_params": "query parameters the origin checks a signature with (or that a "
    "signature covers): never dropped; a drop pattern matching one is refused (default: none)",
    "vary_accept_classes": "format classes Accept is reduced to, in order of preference, e.g. "
    "'avif,webp,jxl': one variant and one origin render per class for origins that vary on "
    "Accept, which gets the class's canonical Accept (default: off, Accept as sent)",
    "source_grammar": "URL grammar of the image service behind the cache, to purge every "
    "derivative of one source image: none (the default), imgproxy, imagor or thumbor",
    "warm_concurrency": "warm-up requests (POST /warm, pixcache warm) in flight at once "
    "(default 4)",
    "warm_rate": "warm-up requests started per second (default 0: only --warm-concurrency "
    "bounds them)",
    "log_format": "auto (JSON unless stdout is a TTY), json or console",
    "log_level": "debug, info, warning or error",
}


def _add_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file with any of the settings below")
    for name in SETTINGS:
        env = "PIXCACHE_" + name.upper()
        parser.add_argument("--" + name.replace("_", "-"), dest=name, help=f"{HELP[name]} [{env}]")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="pixcache", description="A caching reverse proxy for images."
    )
    commands = root.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the caching proxy")
    _add_settings(serve)
    verify_cmd.add_parser(commands)
    purge_cmd.add_parser(commands)
    warm_cmd.add_parser(commands)
    demo_cmd.add_parser(commands)
    return root


def _start(config: Config, store: Store) -> int:
    configure_logging(config.log_format, config.log_level)
    from proxy.workers import run

    try:
        run(config, store)
    except ConfigError as exc:
        print(f"pixcache: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"pixcache: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "verify":
        return verify_cmd.run(args)
    if args.command == "purge":
        return purge_cmd.run(args)
    if args.command == "warm":
        return warm_cmd.run(args)
    if args.command == "demo":
        return demo_cmd.run(args)
    flags: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    try:
        config = build_config(flags)
        if config.workers > 1:
            _metrics_across_workers()
        store = _prepare_store(config)
    except ConfigError as exc:
        print(f"pixcache: {exc}", file=sys.stderr)
        return 2
    return _start(config, store)


def _metrics_across_workers() -> None:
    """prometheus-client's multiprocess mode: every worker writes its samples to files in
    one directory, and a scrape of any worker sums them. The library takes the directory
    from its environment variable, read when the first metric is created, so it is set
    here, before proxy.app is imported. A fresh directory per start: old samples of dead
    processes must not be counted again (proxy/metrics_dir.py)."""
    import os

    from proxy import metrics_dir

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir.make()


def _prepare_store(config: Config) -> Store:
    """A cache directory we cannot write is a configuration error, found before serving."""
    from proxy.app import make_store

    cache_dir = config.cache_dir
    store = make_store(config)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        store.prepare()
    except OSError as exc:
        raise ConfigError("cache_dir", f"{str(cache_dir)!r} is not writable: {exc}") from None
    return store


if __name__ == "__main__":
    sys.exit(main())
