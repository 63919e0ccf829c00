"""The stream worker: one Faust app that keeps each user's recent sequence.

Modules, one concern each:

- ``sequence``: the pure state update (dedupe, late events, truncation), the
  table value codec and the score-request builder. No Faust, no I/O.
- ``settings``: ``WorkerSettings.from_env()``, read once in ``main()``.
- ``topics``, ``tables``, ``agents``: what the app declares; ``app.create_app``
  builds them from settings (no module-level app or settings).
- ``tansu_compat``: the end-offset fix for the embedded Tansu broker.
- ``metrics``: Prometheus counters in a per-worker registry.
- ``worker``: ``run_worker(settings)`` and ``main()`` (``python -m recstream.stream.worker``).
- ``testing``: run a worker process and read back its state (integration tests).

Nothing here imports torch (import-linter enforces it): the worker image has none.
"""
