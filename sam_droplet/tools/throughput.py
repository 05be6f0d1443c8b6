"""Sam-mode throughput in warm processes: images per second and the split over stages.

The benchmark's speed table runs every image once in a fresh process. That is right for peak
memory and for the comparison with the original approach, and wrong for a GPU, whose first calls
pay for CUDA's start-up (context, kernel loading, autotuning). Here each worker process loads the
model once, segments the images once untimed (warm-up), waits until every worker is warm, and then
segments them ``rounds`` times. Throughput is the number of images all workers segmented over the
wall time from that common start to the last finish.

Several workers overlap one image's CPU stages (detection, measurement) with another's GPU stages;
they split the CPU cores between them (threads per worker = cores // workers). The CPU time each
image costs is reported too: on any machine, cores / CPU seconds per image bounds the throughput
of sam mode, however fast the GPU.

Run it with ``sam-droplet-bench --throughput-only [IMAGES] [--workers K]``; the full benchmark
includes it with one worker.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..settings import DETECTORS

__all__ = ["ThroughputResult", "child_env", "measure_throughput", "render_throughput", "run_worker"]

# Pipeline stages (timing keys of a result) and how the report names them.
STAGES = {
    "decode": "decode",
    "detect": "detect",
    "detect_net": "detect (model)",
    "combine": "combine",
    "refine_encode": "SAM encode",
    "refine_decode": "SAM decode",
    "refine_paste": "paste",
    "postprocess": "postprocess",
    "measure": "measure",
    "filter": "filter",
}


@dataclass(frozen=True)
class ThroughputResult:
    """What :func:`measure_throughput` measured.

    Attributes:
        images: image file names, segmented ``rounds`` times by every worker.
        workers: worker processes running at once.
        threads_per_worker: CPU threads given to each worker (torch, OpenCV, detector).
        rounds: timed passes over the images per worker.
        detector: what found the droplets SAM refined (classical, net or combined).
        device: where SAM ran (``cpu``, or the GPU's name).
        precision: ``fp32``, or the autocast dtype on CUDA.
        segmented: images segmented in the timed passes, all workers together.
        seconds: wall time from the common start to the last worker's finish.
        images_per_second: ``segmented / seconds``.
        latency_ms: mean wall time of one image within a worker.
        cpu_seconds_per_image: process CPU time (all threads) per image, averaged over workers.
        cpu_ceiling: the measuring machine's cores / ``cpu_seconds_per_image``: the images per
            second its cores allow, whatever the GPU does.
        stages_ms: mean milliseconds per image of each pipeline stage.
        droplets: droplets found per image (from the last pass).
        prompts: SAM prompts per image (from the last pass).
    """

    images: list[str]
    workers: int
    threads_per_worker: int
    rounds: int
    detector: str
    device: str
    precision: str
    segmented: int
    seconds: float
    images_per_second: float
    latency_ms: float
    cpu_seconds_per_image: float
    cpu_ceiling: float
    stages_ms: dict[str, float]
    droplets: list[int]
    prompts: list[int]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_env(threads: int | None = None) -> dict[str, str]:
    """Environment for a child process that imports this same ``sam_droplet`` (wherever it lives),
    with ``threads`` CPU threads for OpenMP and MKL when given."""
    package_parent = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def run_worker(
    images: list[Path], checkpoint: Path, rounds: int, threads: int, barrier: Path, workers: int, detector: str = "auto"
) -> dict:
    """One worker: load, warm up, wait for the others, then segment ``images`` ``rounds`` times."""
    from ..pipeline import load_model, segment

    engine = load_model(checkpoint, "vit_t", "auto", required=True, torch_threads=threads, detector=detector)
    model = engine.model
    data = [p.read_bytes() for p in images]

    def run(blob: bytes) -> Any:
        return segment(blob, engine, segmenter="sam")

    for blob in data:  # warm-up: CUDA start-up, allocator, thread pools, page faults
        run(blob)
    (barrier / str(os.getpid())).touch()
    deadline = time.time() + 600
    while len(list(barrier.iterdir())) < workers and time.time() < deadline:
        time.sleep(0.01)
    start, cpu0 = time.time(), _cpu_seconds()
    stages: list[dict[str, float]] = []
    latencies: list[float] = []
    droplets: list[int] = []
    prompts: list[int] = []
    for _ in range(rounds):
        droplets, prompts = [], []
        for blob in data:
            t0 = time.perf_counter()
            result = run(blob)
            latencies.append((time.perf_counter() - t0) * 1000)
            stages.append(result.timing_ms)
            droplets.append(len(result.droplets))
            prompts.append(int(result.details.get("sam", {}).get("prompts", 0)))
    end, cpu = time.time(), _cpu_seconds() - cpu0
    device = model.device
    if device.type == "cuda":
        import torch

        name = torch.cuda.get_device_name(device)
        precision = "bf16 autocast" if torch.cuda.is_bf16_supported() else "fp16 autocast"
    else:
        name, precision = str(device), "fp32"
    return {
        "start": start,
        "end": end,
        "segmented": len(latencies),
        "cpu_seconds": cpu,
        "latency_ms": latencies,
        "stages": stages,
        "droplets": droplets,
        "prompts": prompts,
        "detector": engine.resolve_detector(None),
        "device": name,
        "precision": precision,
    }


def measure_throughput(
    images: list[Path],
    checkpoint: Path,
    workers: int = 1,
    rounds: int = 3,
    timeout: float = 3600,
    detector: str = "auto",
) -> ThroughputResult:
    """Run ``workers`` processes of :func:`run_worker` at once and combine what they measured.

    Args:
        images: images to segment (each worker segments all of them, ``rounds`` times).
        checkpoint: SAM checkpoint (a random-init one times the same as real weights).
        workers: processes at once; each gets ``cores // workers`` threads (at least 1).
        rounds: timed passes per worker, after one untimed warm-up pass.
        timeout: seconds allowed per worker.
        detector: what finds the droplets SAM refines (auto, classical, net or combined).
    """
    threads = max((os.cpu_count() or 1) // workers, 1)
    env = child_env(threads)
    with tempfile.TemporaryDirectory(prefix="sam_droplet_throughput_") as barrier:
        cmd = [sys.executable, "-m", "sam_droplet.tools.throughput", "--barrier", barrier, "--workers", str(workers)]
        cmd += ["--checkpoint", str(checkpoint), "--rounds", str(rounds), "--threads", str(threads)]
        cmd += ["--detector", detector]
        cmd += [str(p.resolve()) for p in images]
        procs = [
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(workers)
        ]
        outs = []
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            if proc.returncode != 0:
                raise RuntimeError(f"throughput worker failed:\n{stderr[-2000:]}")
            outs.append(json.loads(stdout.strip().splitlines()[-1]))
    segmented = sum(o["segmented"] for o in outs)
    cpu_per_image = sum(o["cpu_seconds"] for o in outs) / segmented
    seconds = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    stages = [s for o in outs for s in o["stages"]]
    stages_ms = {name: float(np.mean([s.get(key, 0.0) for s in stages])) for key, name in STAGES.items()}
    return ThroughputResult(
        images=[p.name for p in images],
        workers=workers,
        threads_per_worker=threads,
        rounds=rounds,
        detector=outs[0]["detector"],
        device=outs[0]["device"],
        precision=outs[0]["precision"],
        segmented=segmented,
        seconds=seconds,
        images_per_second=segmented / seconds if seconds > 0 else float("inf"),
        latency_ms=float(np.mean([v for o in outs for v in o["latency_ms"]])),
        cpu_seconds_per_image=cpu_per_image,
        cpu_ceiling=(os.cpu_count() or 1) / cpu_per_image if cpu_per_image else float("inf"),
        stages_ms={k: v for k, v in stages_ms.items() if v > 0},
        droplets=outs[0]["droplets"],
        prompts=outs[0]["prompts"],
    )


def render_throughput(result: ThroughputResult) -> list[str]:
    """Markdown lines of the throughput section."""
    r = result
    stages = ", ".join(f"{k} {v:.0f}" for k, v in r.stages_ms.items())
    return [
        "## Sam mode throughput (warm processes)",
        "",
        f"{r.workers} worker process(es) of {r.threads_per_worker} CPU thread(s), the {r.detector} detector, "
        f"SAM on {r.device} ({r.precision}); each worker segments {', '.join(r.images)} in {r.rounds} timed pass(es) after "
        f"an untimed warm-up pass (droplets per image: {', '.join(str(d) for d in r.droplets)}; SAM prompts: "
        f"{', '.join(str(p) for p in r.prompts)}).",
        "",
        "| images/s | images | seconds | latency ms/image | CPU s/image | cores / CPU s/image |",
        "|---|---|---|---|---|---|",
        f"| {r.images_per_second:.2f} | {r.segmented} | {r.seconds:.1f} | {r.latency_ms:.0f} | "
        f"{r.cpu_seconds_per_image:.2f} | {r.cpu_ceiling:.2f} |",
        "",
        f"Mean ms per image by stage: {stages}.",
        "",
        "CPU s/image is the process CPU time (all threads) per image. The classical detector and the "
        "measurements run on the CPU (the droplet model runs on SAM's device), so on any GPU a host with C cores segments at most about "
        "C / (CPU s per image) images per second in sam mode (on CUDA the figure also counts the host's "
        "busy wait for the GPU, so there it understates what the cores allow).",
        "",
    ]


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sam_droplet.tools.throughput", description="one throughput worker")
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--barrier", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--detector", choices=DETECTORS, default="auto")
    args = parser.parse_args(argv)
    out = run_worker(args.images, args.checkpoint, args.rounds, args.threads, args.barrier, args.workers, args.detector)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main())
