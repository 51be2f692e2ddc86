"""Run by tests/unit/test_zygote.py in a zygote's child: reports what the child is."""

import json
import os
import sys

report = {
    "argv": sys.argv[1:],
    "cwd": os.getcwd(),
    "marker": os.environ.get("ZYGOTE_PROBE"),
    "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
    "session": os.getsid(0) == os.getpid(),
    "name": __name__,
}
print(json.dumps(report), flush=True)
print("and a line\r\nfor stderr", file=sys.stderr)
if sys.argv[1:2] == ["wait"]:
    sys.stdin.read()  # /dev/null: returns at once; then sleep until signalled
    import time

    time.sleep(60)
sys.exit(int(sys.argv[1]) if sys.argv[1:2] and sys.argv[1].isdigit() else 0)
