"""The cache store: layout, streaming writes, atomic commit, lookup."""
