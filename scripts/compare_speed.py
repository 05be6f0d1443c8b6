"""Time two versions of the package side by side on the same pictures.

``python scripts/compare_speed.py OLD NEW IMAGE... [--rounds N] [--detector D] [--prefix CMD]``

OLD and NEW are folders holding a ``sam_droplet`` package (a git worktree, or ``git archive REV
sam_droplet | tar -x -C OLD``). Each runs in its own warm process with an engine made from the
environment (``EngineSettings.from_env``: ``SAM_DEVICE``, ``TORCH_THREADS`` ... apply to both), and
every picture is segmented by the one and then the other (the order swapped each round), so that a
shared machine's drift hits both alike. Prints, per picture, the median wall and process CPU
seconds of each and their ratio, then the totals. ``--prefix`` runs both workers under a command,
for example ``"taskset -c 0,1"``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from statistics import median


def worker(package_root: str, detector: str) -> None:
    """Segment the paths read from stdin, one JSON line [wall s, CPU s, droplets] per picture."""
    sys.path.insert(0, package_root)
    import sam_droplet as sd
    from sam_droplet.pipeline import Engine
    from sam_droplet.settings import EngineSettings

    if not sd.__file__.startswith(str(Path(package_root).resolve())):
        raise SystemExit(f"{package_root} holds no sam_droplet package (imported {sd.__file__})")
    engine = Engine.start(EngineSettings.from_env({"segmenter": "classical", "detector": detector}))
    print("ready", flush=True)
    for line in sys.stdin:
        start, cpu = time.perf_counter(), time.process_time()
        result = sd.segment(line.strip(), engine, segmenter="classical")
        print(json.dumps([time.perf_counter() - start, time.process_time() - cpu, len(result.droplets)]), flush=True)


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:  # one side: --worker PACKAGE_ROOT DETECTOR
        return worker(sys.argv[2], sys.argv[3])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--detector", default="combined")
    ap.add_argument("--prefix", default="", help="command to run each worker under")
    args = ap.parse_args()
    roots = [str(Path(p).resolve()) for p in (args.old, args.new)]
    procs = [
        subprocess.Popen(
            [*shlex.split(args.prefix), sys.executable, __file__, "--worker", root, args.detector],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for root in roots
    ]
    for proc in procs:
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit("a worker did not start (see its error above)")

    def ask(k: int, image: str) -> list[float]:
        procs[k].stdin.write(image + "\n")
        procs[k].stdin.flush()
        return json.loads(procs[k].stdout.readline())

    for k in (0, 1):
        ask(k, args.images[0])  # warm-up: first calls, the first picture size
    runs: dict[tuple[int, str], list[list[float]]] = {(k, im): [] for k in (0, 1) for im in args.images}
    for r in range(args.rounds):
        for image in args.images:
            for k in (0, 1) if r % 2 == 0 else (1, 0):
                runs[(k, image)].append(ask(k, image))
    totals = [[0.0, 0.0], [0.0, 0.0]]
    for image in args.images:
        cells = []
        for k in (0, 1):
            wall = median(x[0] for x in runs[(k, image)])
            cpu = median(x[1] for x in runs[(k, image)])
            totals[k][0] += wall
            totals[k][1] += cpu
            cells.append(f"{wall:.2f} s (CPU {cpu:.2f}, {int(runs[(k, image)][0][2])} droplets)")
        ratio = median(x[0] for x in runs[(1, image)]) / median(x[0] for x in runs[(0, image)])
        print(f"{'/'.join(Path(image).parts[-2:]):36s} old {cells[0]}  new {cells[1]}  new/old {ratio:.3f}")
    (ow, oc), (nw, nc) = totals
    print(
        f"total: old {ow:.2f} s (CPU {oc:.2f})  new {nw:.2f} s (CPU {nc:.2f})  new/old {nw / ow:.3f} (CPU {nc / oc:.3f})"
    )
    for proc in procs:
        proc.stdin.close()
        proc.wait()


if __name__ == "__main__":
    main()
