"""The parallel seam: every computation over many rows goes through an :class:`Executor`.

- :class:`Executor`: the Protocol (``map``, ``map_take``, ``distributed``, ``workers()``, ``describe()``);
- :class:`LocalExecutor` / :data:`LOCAL`: blocks one after another in this process (the default);
- :class:`DaskExecutor`: the same on a Dask cluster (``pip install 'kdistill[distributed]'``);
- :func:`executor_scope`: the one constructor from ``--workers`` / ``--scheduler`` / ``client=``, which
  ``kdistill distill`` and :func:`kdistill.distill` both use.

A method's distributed step is its own module-level function handed to ``map_take`` (KIP's and RFAD's
shards, ``kdistill.methods.iterative.split_update``); nothing here knows which method runs.
"""

from ._local import LOCAL as LOCAL
from ._local import Executor as Executor
from ._local import LocalExecutor as LocalExecutor
from ._local import get_executor as get_executor
from ._dask import DaskExecutor as DaskExecutor
from ._dask import Sharded as Sharded
from ._dask import connect as connect
from ._dask import executor_scope as executor_scope
from ._dask import require_dask as require_dask

__all__ = ["Executor", "LocalExecutor", "LOCAL", "get_executor", "DaskExecutor", "Sharded", "connect",
           "executor_scope", "require_dask"]
