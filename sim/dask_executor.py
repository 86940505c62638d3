"""Run an experiment's cases on a Dask cluster (``python -m sim run FILE --executor dask [--scheduler ADDRESS]``).

With an address the cases go to that running scheduler (a laptop's ``dask scheduler`` / ``dask worker`` or a
cluster's); without one a :class:`distributed.LocalCluster` of ``workers`` single-threaded worker processes is
started for the run and closed after it. Cases are submitted in groups of consecutive cases (a few per worker, as
the local executor does, so the cases of a group open and calibrate their trace once); each group is the same pure
function the local executor runs, so results are identical to a serial run. A user error inside a worker arrives
as the same one-line error (Dask pickles the exception).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tqdm import tqdm

from sim.errors import ConfigError


def simulate_on_dask(cases: Sequence, group_fn: Callable, workers: int, scheduler: str | None, progress: bool) -> list:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:  # the dist extra is not installed
        raise ConfigError("--executor", "", "dask needs the dist extra: pip install -e '.[dist]'", "dask") from None
    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                 dashboard_address=None)  # fmt: skip
    try:
        try:
            client = Client(scheduler or cluster, timeout="10s")
        except OSError as err:
            raise ConfigError("--scheduler", "", f"cannot reach a Dask scheduler ({err})", scheduler) from None
        with client:
            n_workers = max(1, len(client.scheduler_info()["workers"]))
            n_groups = min(len(cases), 4 * n_workers)
            bounds = [len(cases) * g // n_groups for g in range(n_groups + 1)]
            groups = [list(cases[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
            futures = [client.submit(group_fn, group, pure=False) for group in groups]
            sizes = {f.key: len(g) for f, g in zip(futures, groups, strict=True)}
            with tqdm(total=len(cases), unit="case", disable=None if progress else True, desc="simulating (dask)",
                      leave=False) as bar:  # fmt: skip
                for done in as_completed(futures):
                    bar.update(sizes[done.key])
            return [result for future in futures for result in future.result()]
    finally:
        if cluster is not None:
            cluster.close()
