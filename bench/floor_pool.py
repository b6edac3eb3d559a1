"""The process-job floor: a thread pool running ``subprocess.run`` in-process, no protocol.

    python bench/floor_pool.py JOBS [THREADS]

What a Python program would write to run JOBS ``true`` processes eight at a time:
``ThreadPoolExecutor(THREADS)`` (8 by default) calling ``subprocess.run(["true"],
capture_output=True, start_new_session=True)``: the work a ``run`` step does (a new session so
the whole tree can be stopped, both output pipes captured), without a protocol, a job table or
a stop path. It prints the seconds from the first submit to the last result (the interpreter's
start is not timed, as ``stepline serve``'s is not) and exits 1 if any process failed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def run_true(_: int) -> int:
    return subprocess.run(["true"], capture_output=True, start_new_session=True).returncode


def main() -> int:
    jobs = int(sys.argv[1])
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        codes = list(pool.map(run_true, range(jobs)))
    elapsed = time.perf_counter() - start
    print(f"{elapsed:.6f}")
    return 0 if codes == [0] * jobs else 1


if __name__ == "__main__":
    sys.exit(main())
