"""Running an evaluation runner over images in worker processes, with results identical to one process.

The images are cut on one global batch grid (batch ``k`` = images [k*bs, (k+1)*bs)), and every batch is computed
whole by one single-threaded process, whoever runs it. So a batch's composition, and the arithmetic inside it, do
not depend on how many workers (or ranks, ``tsptq.evaluation.distributed``) there are: outputs are identical for any count.
Parallelism comes from processes, not threads.

Workers are started once per evaluation (spawned: torch and fork do not mix) and receive the image set once. Each
runner (``tsptq.evaluation.engines``) is pickled once to a temporary file; workers load it once and cache it.
"""
from __future__ import annotations

import os
import pickle
import signal
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import multiprocessing as mp
import numpy as np
import torch
from tqdm import tqdm

TASKS_PER_WORKER = 12  # finer tasks: a smoother progress bar and ETA, and balance between uneven workers


def default_workers() -> int:
    """Every core this process may use, divided among the ranks on this node when launched by torchrun."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def batch_grid(n_images: int, batch_size: int) -> list[tuple[int, int]]:
    return [(i, min(i + batch_size, n_images)) for i in range(0, n_images, batch_size)]


def split_range(start_batch: int, stop_batch: int, parts: int) -> list[tuple[int, int]]:
    """Cut batches [start, stop) into ``parts`` contiguous pieces as even as possible (empty ones dropped)."""
    n = stop_batch - start_batch
    bounds = [start_batch + (n * k) // parts for k in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


# --- the worker side -----------------------------------------------------------------------------------------------

_images = _cfg = None
_runners: dict[str, object] = {}


def _init_worker(images, cfg) -> None:
    global _images, _cfg
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the host's to handle: it stops the workers
    torch.set_num_threads(1)
    _images, _cfg = images, cfg


def _run_batches(runner, images, cfg, start: int, stop: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    logits, cls = [], []
    for x in images.batches(cfg, batch_size, start, stop):
        a, b = runner(x)
        logits.append(a)
        cls.append(b)
    return np.concatenate(logits), np.concatenate(cls)


def _task(runner_file: str, start: int, stop: int, batch_size: int):
    runner = _runners.get(runner_file)
    if runner is None:
        _runners.clear()  # one runner at a time: the previous method's is done
        runner = _runners[runner_file] = pickle.loads(Path(runner_file).read_bytes())
    return start, _run_batches(runner, _images, _cfg, start, stop, batch_size)


@contextmanager
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# --- the host side -------------------------------------------------------------------------------------------------

class ShardPool:
    """Runs runners over [start, stop) of an image set in ``workers`` processes (in this process when 1).

    Use as a context manager; ``run`` may be called once per method."""

    def __init__(self, images, cfg, batch_size: int, workers: int = 1, progress: bool = True):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.images, self.cfg, self.batch_size = images, cfg, batch_size
        self.workers = max(1, workers)
        self.progress = progress
        self._pool = None
        self._tmp = None
        self._count = 0

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(interrupted=exc_type is not None and issubclass(exc_type, KeyboardInterrupt))

    def close(self, interrupted: bool = False) -> None:
        if self._pool is not None:
            if interrupted:  # don't wait for the tasks running: stop the workers now
                for p in list(getattr(self._pool, "_processes", {}).values()):
                    p.terminate()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tsptq-shards-")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_init_worker, initargs=(self.images, self.cfg))
        return self._pool

    def run(self, runner, start: int = 0, stop: int | None = None, desc: str = "") -> tuple[np.ndarray, np.ndarray]:
        """(logits, class tokens) of images [start, stop); start and stop lie on the batch grid (stop may be the end)."""
        stop = len(self.images) if stop is None else stop
        bs = self.batch_size
        if start % bs or (stop % bs and stop != len(self.images)):
            raise ValueError(f"[{start}, {stop}) is not on the batch grid of {bs}")
        batches = batch_grid(len(self.images), bs)[start // bs: -(-stop // bs)]
        bar = tqdm(total=stop - start, desc=desc, unit="img", disable=not self.progress, leave=False,
                   file=sys.stderr, dynamic_ncols=True)
        try:
            workers = min(self.workers, len(batches))
            if workers <= 1:
                return self._run_here(runner, batches, bar)
            return self._run_in_workers(runner, batches, workers, bar)
        finally:
            bar.close()

    def _run_here(self, runner, batches, bar):
        logits, cls = [], []
        with _single_thread():
            for a, b in batches:
                out = _run_batches(runner, self.images, self.cfg, a, b, self.batch_size)
                logits.append(out[0])
                cls.append(out[1])
                bar.update(b - a)
        return np.concatenate(logits), np.concatenate(cls)

    def _run_in_workers(self, runner, batches, workers, bar):
        pool = self._executor()
        self._count += 1
        runner_file = str(Path(self._tmp.name) / f"runner-{self._count}.pkl")
        Path(runner_file).write_bytes(pickle.dumps(runner, protocol=pickle.HIGHEST_PROTOCOL))
        pieces = split_range(0, len(batches), workers * TASKS_PER_WORKER)
        futures = [pool.submit(_task, runner_file, batches[a][0], batches[b - 1][1], self.batch_size)
                   for a, b in pieces]
        results = {}
        try:
            for f in as_completed(futures):
                start, out = f.result()
                results[start] = out
                bar.update(len(out[0]))
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        finally:
            Path(runner_file).unlink(missing_ok=True)
        ordered = [results[k] for k in sorted(results)]
        return np.concatenate([o[0] for o in ordered]), np.concatenate([o[1] for o in ordered])
