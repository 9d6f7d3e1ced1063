"""One worker process of the stress harness: `python -m stress.worker CONFIG W INC`.

It opens the data directory (recovering it if it is the first opener after a
kill), records how long that took, then runs steps of the configured workloads,
drawn by its seeded generator (workloads W2), until the run's deadline, and
closes.  The harness may SIGKILL it at any moment; every event it recorded is
then final (history.py H1, H2) and its last transaction's outcome is unknown.

An error a workload does not expect is not caught: the process exits non-zero
with the traceback on stderr, and the harness's `workers` check fails.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

from .history import Writer
from .workloads import Config, Context, by_name

__all__ = ["main"]


def main(argv: list[str]) -> int:
    config_path, worker, incarnation = argv[0], int(argv[1]), int(argv[2])
    with open(config_path, encoding="utf-8") as f:
        config = Config(**json.load(f))
    writer = Writer(config.history, worker, incarnation)
    began = time.perf_counter()
    db = config.open()
    writer.write(
        {
            "e": "open",
            "id": writer.prefix,
            "pid": os.getpid(),
            "dt": round(time.perf_counter() - began, 6),
        }
    )
    rng = random.Random(f"{config.seed}/{worker}/{incarnation}")
    workloads = [by_name(name)(config) for name in config.workloads]
    weights = [w.weight for w in workloads]
    ctx = Context(db, config, writer, worker, incarnation, rng)
    while time.time() < config.deadline:
        rng.choices(workloads, weights)[0].step(ctx)
    ctx.join()
    db.close()
    writer.write({"e": "done", "id": writer.prefix})
    writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
