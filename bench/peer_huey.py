"""A peer for context, not a floor: Huey's in-memory queue running trivial tasks.

    python bench/peer_huey.py JOBS [WORKERS]

``MemoryHuey`` with a consumer of WORKERS threads (4 by default, as the trivial scenario gives
stepline) runs JOBS tasks that each return their argument; the producer enqueues them all.
Prints the seconds from the first enqueue to the last task's end. Run only when ``huey`` is
installed (``pip install huey``): it is reported beside the floors, never as a target.
"""

from __future__ import annotations

import sys
import threading
import time

from huey import MemoryHuey

huey = MemoryHuey("bench", results=False, utc=True)
done = threading.Semaphore(0)


@huey.task()
def value(i: int) -> int:
    done.release()
    return i


def main() -> int:
    jobs = int(sys.argv[1])
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    consumer = huey.create_consumer(workers=workers, worker_type="thread", periodic=False)
    consumer.start()
    start = time.perf_counter()
    for i in range(jobs):
        value(i)
    for _ in range(jobs):
        if not done.acquire(timeout=120):
            print("huey: tasks went missing", file=sys.stderr)
            return 1
    elapsed = time.perf_counter() - start
    consumer.stop(graceful=True)
    print(f"{elapsed:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
