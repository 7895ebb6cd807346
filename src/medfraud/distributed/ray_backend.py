"""Ray tasks for independent units of work: an experiment's sweep points, the generator's
shards, a scoring batch's chunks.

A thin layer over Ray's own API: connect or start a cluster, run a function over argument
tuples as tasks (all at once, reporting each completion: :func:`map_tasks`; or streamed in
order with a bounded number in flight: :func:`imap_tasks`), and re-raise a task's failure
as the exception the task raised (so callers handle a worker's ``DataError`` like a local
one).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NoReturn

BACKENDS = ("local", "ray")


def check_backend(backend: str) -> None:
    """Raise ValueError unless ``backend`` is one of :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _ray():
    try:
        import ray
    except ImportError as exc:  # the optional extra is missing
        raise ImportError("the ray backend needs Ray: pip install 'medfraud[ray]'") from exc
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to the Ray cluster at ``address`` (``"auto"``: the one this machine belongs
    to), or start a local one with ``num_cpus`` CPUs (default: every core).  A no-op when
    this process is already connected.

    A local cluster is started without token authentication (``RAY_AUTH_MODE=disabled``
    unless the environment sets it): it listens on this machine only and lives as long as
    the process.
    """
    ray = _ray()
    if ray.is_initialized():
        return
    if address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)


def _raise_cause(ray, exc, pending) -> NoReturn:
    """Cancel the ``pending`` tasks and raise the failed task's own exception."""
    for ref in pending:
        ray.cancel(ref, force=True)
    raise exc.as_instanceof_cause() from None


def imap_tasks(function: Callable[..., Any], arguments: Iterable[tuple], *,
               shared: tuple = (), in_flight: int | None = None,
               cpus_per_task: float = 1.0) -> Iterator[Any]:
    """``function(*shared, *args)`` for each ``args`` of ``arguments``, as Ray tasks, yielded in
    the order of ``arguments``.  ``arguments`` is consumed lazily: at most ``in_flight``
    tasks (default: the cluster's CPUs + 1) are submitted and not yet yielded, so inputs
    and results larger than memory in total stream through.

    ``shared`` objects are put in Ray's object store once and handed to every task (a large
    read-only input, such as the generator's world or a scoring pipeline).  A failed task
    raises its exception (an instance of its original class) and cancels the others.
    """
    ray = _ray()
    if not ray.is_initialized():
        init_ray()
    if in_flight is None:
        in_flight = int(ray.cluster_resources().get("CPU", 1)) + 1
    remote = ray.remote(num_cpus=cpus_per_task, max_retries=0)(function)
    shared_refs = [ray.put(value) for value in shared]
    pending = iter(arguments)
    queue: deque = deque()
    exhausted = False
    while True:
        while not exhausted and len(queue) < in_flight:
            args = next(pending, None)
            if args is None:
                exhausted = True
            else:
                queue.append(remote.remote(*shared_refs, *args))
        if not queue:
            return
        head = queue.popleft()
        try:
            result = ray.get(head)
        except ray.exceptions.RayTaskError as exc:
            _raise_cause(ray, exc, queue)
        yield result


def map_tasks(function: Callable[..., Any], arguments: Sequence[tuple], *,
              cpus_per_task: float = 1.0,
              on_done: Callable[[int], None] | None = None) -> list[Any]:
    """``[function(*args) for args in arguments]``, each call a Ray task.

    Parameters
    ----------
    function : a module-level function (Ray pickles it by reference to its module).
    arguments : one tuple of positional arguments per task.
    cpus_per_task : CPUs Ray reserves per task (tasks run side by side up to the cluster's
        CPUs; a task may still use more threads than it reserves).
    on_done : called with the task's index as each task finishes, in completion order.

    Returns
    -------
    The results in the order of ``arguments``.

    Raises
    ------
    The first failed task's exception (an instance of its original class); the tasks
    still running are cancelled.
    """
    ray = _ray()
    if not ray.is_initialized():
        init_ray()
    remote = ray.remote(num_cpus=cpus_per_task, max_retries=0)(function)
    refs = [remote.remote(*args) for args in arguments]
    index = {ref: i for i, ref in enumerate(refs)}
    results: dict[int, Any] = {}
    pending = list(refs)
    while pending:
        (finished,), pending = ray.wait(pending, num_returns=1)
        try:
            results[index[finished]] = ray.get(finished)
        except ray.exceptions.RayTaskError as exc:
            _raise_cause(ray, exc, pending)
        if on_done is not None:
            on_done(index[finished])
    return [results[i] for i in range(len(refs))]
