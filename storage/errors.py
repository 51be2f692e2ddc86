"""Storage faults as a type: what a write to the cache filesystem failed with."""

from __future__ import annotations

import errno

# The faults an operator tells apart (disk full, quota, failing disk); anything else is
# "oserror". The kind names the Prometheus label and the reason pixcache logs.
_KINDS = {errno.ENOSPC: "enospc", errno.EDQUOT: "edquot", errno.EIO: "eio"}


class StorageFault(Exception):
    """Writing an entry failed; the response is still served, not stored."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.errno = cause.errno or 0
        self.kind = _KINDS.get(self.errno, "oserror")

    @property
    def reason(self) -> str:
        """What Cache-Status `detail` and the log say: storage-enospc and the like."""
        return f"storage-{self.kind}"
