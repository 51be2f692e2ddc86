# pixcache: the caching proxy, as a container image.
#   docker build -t pixcache .
#   docker run -e PIXCACHE_ORIGIN=http://origin:8081 -p 8080:8080 -v pixcache:/var/cache/pixcache pixcache
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libvips comes with the pyvips-binary wheel; nothing from apt is needed.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY storage ./storage
# The otel extra: traces are exported when OTEL_TRACES_EXPORTER is set (docs/tracing.md).
RUN pip install '.[otel]' && rm -rf /src

# A non-root user owns the cache directory. A fresh named volume mounted there takes this
# ownership from the image.
RUN useradd --system --uid 10001 --user-group --home-dir /nonexistent \
        --shell /usr/sbin/nologin pixcache \
    && mkdir -p /var/cache/pixcache \
    && chown pixcache:pixcache /var/cache/pixcache
WORKDIR /var/cache/pixcache
USER pixcache

# Every setting can be given as PIXCACHE_* (see docs/configuration.md); the origin is required.
ENV PIXCACHE_LISTEN=0.0.0.0:8080 \
    PIXCACHE_CACHE_DIR=/var/cache/pixcache \
    PIXCACHE_LOG_FORMAT=json
EXPOSE 8080
VOLUME ["/var/cache/pixcache"]

# Healthy when the HTTP port answers. `only-if-cached` (RFC 9111 §5.2.1.7) means the probe
# never reaches the origin: it gets the stored entry or a 504, both proofs that pixcache serves.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import http.client as h; c = h.HTTPConnection('127.0.0.1', 8080, timeout=3); c.request('HEAD', '/', headers={'Cache-Control': 'only-if-cached'}); c.getresponse()"]

ENTRYPOINT ["pixcache", "serve"]
