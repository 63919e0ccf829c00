"""The stream worker: one Faust app that keeps each user's recent sequence.

- ``sequence``: the pure state update, the table value codec, score requests.
- ``settings``: ``WorkerSettings.from_env()``, read once in ``main()``.
- ``app``: ``create_app(settings)`` builds the whole worker from ``topics``,
  ``tables``, the agents (``agents``, ``deletions``, ``last_recommendations``),
  ``take`` (the fetch loop into batches), ``offset_gaps`` and ``monitoring``.
- ``faust_internals``: every use of Faust's, aiokafka's and the RocksDB
  store's private parts, for one pinned faust-streaming version.
- ``tansu_compat``: what the worker needs against the embedded Tansu broker only.
- ``worker``: ``run_worker(settings)`` and ``main()``, behind both entry points.

Nothing here imports torch (tests/unit/test_import_contracts.py): the worker image has none.
"""
