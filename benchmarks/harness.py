"""Measuring tools shared by the benchmarks: timing, memory, the machine's name, worker processes.

Every model is measured in a process of its own, so that its peak memory is its own and no model
warms caches or allocators for the next one; the processes take turns (:class:`Worker`).
"""

import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median
from typing import TextIO

import torch

ROOT = Path(__file__).resolve().parents[1]  # the checkout
RESULTS_DIR = ROOT / "benchmarks" / "results"


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads for intra-op work; the same count for every model."""
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def device_description(device: str) -> str:
    """A name for the table: the GPU's model, or the CPU's model and the thread count used."""
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(device))} (CUDA {torch.version.cuda})"
    cpu = _cpu_model() or platform.processor() or platform.machine()
    return f"CPU {cpu}, {torch.get_num_threads()} thread(s) of {os.cpu_count()}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def environment() -> dict[str, str]:
    """Versions that the numbers depend on."""
    import detectron2

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "detectron2": detectron2.__version__,
        "platform": platform.platform(),
        "commit": _git_commit(),
    }


def _git_commit() -> str:
    """The checkout's commit, marked "+changes" when files differ from it ("" outside git)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True
        )
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True
        )
    except OSError:
        return ""
    if head.returncode != 0:
        return ""
    return head.stdout.strip() + ("+changes" if status.stdout.strip() else "")


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so that wall-clock times cover it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def time_calls(fn: Callable[[], object], device: str, warmup: int, iters: int) -> list[float]:
    """Seconds taken by each of ``iters`` calls of ``fn``, after ``warmup`` untimed calls."""
    if iters < 1:
        raise ValueError(f"--iters must be >= 1, got {iters}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    seconds = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def summarize_ms(seconds: list[float]) -> dict[str, float]:
    """Median (the number reported) and spread of a list of timings, in milliseconds."""
    ms = sorted(s * 1000.0 for s in seconds)
    return {"median_ms": median(ms), "min_ms": ms[0], "max_ms": ms[-1], "n": len(ms)}


def peak_memory_mb(device: str) -> dict[str, float]:
    """Peak resident memory of this process (CPU) and, on a GPU, peak allocated GPU memory."""
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1.0 if sys.platform == "darwin" else 1024.0
    peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20}
    if device.startswith("cuda"):
        peak["peak_gpu_mb"] = torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    return peak


@contextmanager
def count_mask_rois(model: torch.nn.Module) -> Iterator[list[int]]:
    """Record how many RoIs each call of the model's mask head received.

    Finds the head by its name (``mask_head``: ``roi_heads.mask_head`` in Mask R-CNN,
    ``mask_branch.mask_head`` in RetinaMask), so it counts the masks actually computed, whatever
    the config asked for. Yields an empty list for a model without one.
    """
    counts: list[int] = []
    heads = [m for name, m in model.named_modules() if name.split(".")[-1] == "mask_head"]
    hooks = [
        h.register_forward_hook(lambda _m, args, _out: counts.append(len(args[0]))) for h in heads
    ]
    try:
        yield counts
    finally:
        for hook in hooks:
            hook.remove()


class Worker:
    """One model in a process of its own, driven by the benchmark one command at a time.

    The driver sends a command per line on the worker's stdin and reads one JSON reply per line
    from its stdout; the worker's logs go to ``log_path``. Several workers live side by side so
    that the driver can interleave their timed calls: on a shared machine, load that comes and
    goes then slows every model alike instead of whichever one was running.
    """

    def __init__(self, name: str, module: str, args: list[str], log_path: Path):
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # The benchmark package is found from any working directory.
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        with open(log_path, "w", encoding="utf-8") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, "--serve", *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, "PYTHONPATH": path},
            )

    def ask(self, command: str) -> dict:
        """Send ``command``; return the worker's reply. A dead worker raises with its log."""
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            self.proc.wait()
            tail = self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
            raise RuntimeError(
                f"benchmark worker {self.name!r} stopped (exit {self.proc.returncode}) at "
                f"command {command!r}; end of its log {self.log_path}:\n{tail}"
            )
        return json.loads(line)

    def finish(self) -> dict:
        """The worker's closing reply (its peak memory); the process then exits."""
        reply = self.ask("finish")
        self.proc.stdin.close()
        self.proc.wait()
        return reply

    def kill(self) -> None:
        """Stop a worker that is still running (after another one failed)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def claim_stdout() -> TextIO:
    """In a worker, first thing: keep stdout for the replies to the driver.

    Returns the reply channel; anything else written to stdout from now on (detectron2's logs,
    prints) goes to stderr, the worker's log.
    """
    sys.stdout.flush()
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return replies


def serve(
    handlers: dict[str, Callable[[], dict]],
    replies: TextIO,
    fallback: Callable[[str], Callable[[], dict]] | None = None,
) -> None:
    """The worker's side of :class:`Worker`: answer commands until ``finish`` or end of input.

    ``replies`` is the channel from :func:`claim_stdout`; ``fallback`` turns a command that is
    not in ``handlers`` (one with arguments) into its handler.
    """
    for line in sys.stdin:
        command = line.strip()
        if command in handlers:
            handler = handlers[command]
        elif fallback is not None:
            handler = fallback(command)
        else:
            raise ValueError(f"unknown worker command {command!r}; known: {sorted(handlers)}")
        replies.write(json.dumps(handler()) + "\n")
        replies.flush()
        if command == "finish":
            return


def interleave(workers: list[Worker], command: str, rounds: int) -> dict[str, list[dict]]:
    """Send ``command`` to every worker in turn, ``rounds`` times; the replies by worker name."""
    replies: dict[str, list[dict]] = {w.name: [] for w in workers}
    for _ in range(rounds):
        for worker in workers:
            replies[worker.name].append(worker.ask(command))
    return replies


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages: how busy it was besides the benchmark."""
    return [round(x, 2) for x in os.getloadavg()]


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented, standard JSON (NaN, e.g. the AP of a model that found
    nothing, becomes null), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(_without_nan(data), indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)  # a killed run leaves the previous file whole


def _without_nan(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(v) for v in value]
    return value
