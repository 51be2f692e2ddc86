"""pixcache: a caching reverse proxy for images."""
