"""Machine instructions per bid request, counted by valgrind's callgrind: unlike CPU time,
the count does not move with the speed of a shared machine (the same code counts the same
to within half a percent), so it ranks two versions of the bid path from one run each.

    .venv/bin/python benchmarks/bid_instructions.py [--warmup 1500] [--requests 300]
        [--campaigns 10000] [--redis-url redis://127.0.0.1:6379/13]

The bid path is the one `bid_path.py` runs (the handler in one process: decoding, the
engine with the model and real Redis, the answer and its events; no HTTP), against the load
benchmark's snapshot and requests. The process runs under callgrind with counting off
while it starts, loads the snapshot and answers ``--warmup`` requests; counting is switched
on (`callgrind_control`) for the next ``--requests`` only. Needs valgrind (Debian package
``valgrind``); under it the bid path runs about 50 times slower, so a run takes a minute.
The model's answers depend on the hour (a feature), so compare counts taken in one hour.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bid_path import started_service  # noqa: E402
from benchmarks.bidder_load import corpus_requests, flush_redis, request_bodies  # noqa: E402


def _wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(0.05)


async def _answer(args: argparse.Namespace, flags: Path, data_dir: str) -> None:
    """The measured process: warm up, say so, answer the counted requests, say so."""
    service = await started_service(args, data_dir)
    bodies = request_bodies(args.warmup + args.requests, args.seed,
                            corpus_requests(os.environ.get("OPENRTB_CORPUS", "")))
    exchange = service.handler.exchange("")
    assert exchange is not None
    statuses: dict[int, int] = {}
    for body in bodies[:args.warmup]:
        await service.handler.handle(body, exchange=exchange)
    (flags / "warm").touch()
    _wait_for(flags / "counting")
    for body in bodies[args.warmup:args.warmup + args.requests]:
        answer = await service.handler.handle(body, exchange=exchange)
        statuses[answer.status] = statuses.get(answer.status, 0) + 1
    (flags / "answered").write_text(repr(dict(sorted(statuses.items()))))
    _wait_for(flags / "done")
    await service.stop()
    flush_redis(args.redis_url)


def _count(args: argparse.Namespace) -> None:
    """The parent: runs this script under callgrind and counts only the measured part."""
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian package valgrind)")
    with tempfile.TemporaryDirectory(prefix="bid-instructions-") as work:
        flags, output = Path(work), Path(work) / "callgrind.out"
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={output}", sys.executable, __file__, "--measured",
                   str(flags), *sys.argv[1:]]
        with (flags / "valgrind.log").open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            while not (flags / "warm").exists():
                if process.poll() is not None:
                    raise SystemExit("the measured process exited early:\n"
                                     + (flags / "valgrind.log").read_text()[-3000:])
                time.sleep(0.2)
            subprocess.run(["callgrind_control", "--instr=on", str(process.pid)],
                           check=True, capture_output=True)
            (flags / "counting").touch()
            _wait_for(flags / "answered")
            subprocess.run(["callgrind_control", "--instr=off", str(process.pid)],
                           check=True, capture_output=True)
            (flags / "done").touch()
            process.wait(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        total = next(int(line.split()[1]) for line in output.read_text().splitlines()
                     if line.startswith("totals:"))
        print(f"{args.requests:,} requests after {args.warmup:,}: "
              f"{total / args.requests / 1e6:.3f} M instructions per request; answers "
              f"{(flags / 'answered').read_text()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=1500)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--campaigns", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--measured", metavar="FLAGS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measured:
        with tempfile.TemporaryDirectory() as data_dir:
            uvloop.run(_answer(args, Path(args.measured), data_dir))
    else:
        _count(args)


if __name__ == "__main__":
    main()
