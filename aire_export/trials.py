"""Independent trials (a sweep's points, the seeds of an S4oP step) through one executor.

    executor_named("local")                 in this process, one trial after another
    executor_named("local", workers=4)      a pool of 4 local processes
    executor_named("ray", address=None)     Ray tasks: a Ray started for the run on this machine
                                            (loopback only), or the cluster at ``address``

``executor.map(fn, items, shared=...)`` calls ``fn(shared, item)`` for every item and returns
one :class:`Outcome` per item, in the items' order: its value, or the error that stopped it
(an exception in the trial, a worker process that died). A failed trial is reported, never
lost, and the others still run; bad input (InputError: it would fail every trial the same
way) stops the run with its one line instead. ``shared`` (the model, the data) is sent once per worker
(Ray's object store) rather than once per trial where the executor allows it. ``fn`` must be
a module-level function, so that worker processes can import it.

Results do not depend on the executor: every trial is a pure function of (shared, item) and
is seeded by its item; tests compare Ray's sweep table with the local one.
"""

from __future__ import annotations

import abc
import concurrent.futures
import multiprocessing
import pickle
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aire_export.errors import InputError, RuntimeMissingError

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Outcome:
    """What became of one trial: ``value``, or ``error`` (one line) when it failed."""

    index: int
    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0]


class Executor(abc.ABC):
    name: str

    @abc.abstractmethod
    def map(
        self,
        fn: Callable[[Any, Any], Any],
        items: Sequence[Any],
        *,
        shared: Any = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Outcome]:
        """``fn(shared, item)`` for every item; ``progress(i)`` as trial i finishes."""

    def close(self) -> None:  # noqa: B027 (optional)
        """Release what the executor started (a local Ray)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalExecutor(Executor):
    """Trials in this process (``workers`` 1), or in a pool of local processes."""

    def __init__(self, workers: int = 1) -> None:
        if int(workers) < 1:
            raise InputError(f"--workers must be ≥ 1, got {workers}")
        self.workers = int(workers)
        self.name = "local" if self.workers == 1 else f"local ({self.workers} processes)"

    def map(self, fn, items, *, shared=None, progress=None) -> list[Outcome]:
        if self.workers == 1:
            outcomes = []
            for i, item in enumerate(items):
                try:
                    outcomes.append(Outcome(i, fn(shared, item)))
                except InputError:
                    raise
                except Exception as e:  # a failed trial is an outcome, not the end of the run
                    outcomes.append(Outcome(i, error=_describe(e)))
                if progress:
                    progress(i)
            return outcomes
        context = multiprocessing.get_context("spawn")  # no forked torch or onnxruntime state
        outcomes: list[Outcome | None] = [None] * len(items)
        # ``shared`` goes to each worker once, as plain pickle bytes: multiprocessing's own
        # pickler moves torch tensors into shared memory, which leaves numpy views of their old
        # storage (the modal views) pointing at freed memory in this process
        with concurrent.futures.ProcessPoolExecutor(
            self.workers,
            mp_context=context,
            initializer=_receive_shared,
            initargs=(pickle.dumps(shared),),
        ) as pool:
            futures = {pool.submit(_with_shared, fn, item): i for i, item in enumerate(items)}
            for future in concurrent.futures.as_completed(futures):
                i = futures[future]
                try:
                    outcomes[i] = Outcome(i, future.result())
                except concurrent.futures.process.BrokenProcessPool as e:
                    outcomes[i] = Outcome(i, error=f"the worker process died ({e})")
                except InputError:
                    raise
                except Exception as e:
                    outcomes[i] = Outcome(i, error=_describe(e))
                if progress:
                    progress(i)
        return outcomes  # type: ignore[return-value]


_SHARED: dict[str, Any] = {}  # in a pool's worker process: what every trial there shares


def _receive_shared(data: bytes) -> None:
    _SHARED["value"] = pickle.loads(data)


def _with_shared(fn, item):
    return fn(_SHARED["value"], item)


def _ray():
    try:
        import ray
    except ImportError:
        raise RuntimeMissingError(
            "--executor ray needs Ray: pip install 'aire-export[scale]'"
        ) from None
    return ray


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """InputError unless ``address`` ("HOST:PORT", "ray://HOST:PORT"; "auto" is Ray's own
    lookup) accepts a TCP connection: Ray itself retries an unreachable cluster for minutes."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        reason = e.strerror or str(e) if isinstance(e, OSError) else "expected HOST:PORT"
        raise InputError(
            f"cannot reach the Ray cluster at {address} ({reason}): start it (ray start --head) "
            "or check --ray-address"
        ) from None


def _call(fn, shared, item):
    """The Ray task: one trial (module level, so that every worker can import it)."""
    return fn(shared, item)


class RayExecutor(Executor):
    """Trials as Ray tasks, one CPU each. Without ``address`` a Ray is started for the run on
    this machine, bound to the loopback interface, and stopped by :meth:`close`; with one, the
    cluster there is used and left running."""

    name = "ray"

    def __init__(self, address: str | None = None, cpus: int | None = None) -> None:
        ray = _ray()
        self._started = False
        if address:
            _check_reachable(address)
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                options["address"] = address
            else:
                options |= {"_node_ip_address": "127.0.0.1", "num_cpus": cpus}
            try:
                ray.init(**options)
            except ConnectionError as e:
                raise InputError(f"cannot reach the Ray cluster at {address}: {e}") from None
            self._started = True
        self.address = address

    def map(self, fn, items, *, shared=None, progress=None) -> list[Outcome]:
        ray = _ray()
        task = ray.remote(num_cpus=1, max_retries=0)(_call)
        shared_ref = ray.put(shared)
        pending = {task.remote(fn, shared_ref, item): i for i, item in enumerate(items)}
        outcomes: list[Outcome | None] = [None] * len(items)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                try:
                    outcomes[i] = Outcome(i, ray.get(ref))
                except ray.exceptions.RayTaskError as e:
                    cause = e.cause if getattr(e, "cause", None) is not None else e
                    if isinstance(cause, InputError):
                        raise cause from None
                    outcomes[i] = Outcome(i, error=_describe(cause))
                except ray.exceptions.RayError as e:  # a worker or node that died
                    outcomes[i] = Outcome(i, error=f"the Ray worker died ({type(e).__name__})")
                if progress:
                    progress(i)
        return outcomes  # type: ignore[return-value]

    def close(self) -> None:
        if self._started:
            _ray().shutdown()
            self._started = False


@dataclass(frozen=True)
class ExecutorSpec:
    """Which executor to start (the --executor, --workers, --ray-address options)."""

    name: str = "local"
    workers: int = 1
    address: str | None = None

    def start(self) -> Executor:
        return executor_named(self.name, workers=self.workers, address=self.address)


def executor_named(name: str, *, workers: int = 1, address: str | None = None) -> Executor:
    """The executor ``name`` ("local" or "ray")."""
    if name == "local":
        if address:
            raise InputError("--ray-address needs --executor ray")
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(address)
    raise InputError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
