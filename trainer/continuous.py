"""``recstream trainer``: the stream into the window, rounds in the background.

The main thread polls ``events`` and ``user-deletions`` (one consumer group of
its own), writes each poll's events and deletions to the window as synced
batches, and only then commits the offsets (at-least-once in, idempotent
window). Every ``every_minutes`` or ``every_events`` new events it starts a
round (:func:`trainer.round.run_round`) in a worker thread, so consuming never
stops while a model trains; when the round ends it moves the trained
watermark, announces a published version on ``model-updates``, prunes the
registry and records the outcome in the state file and the metrics.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from recstream.inference.item_text import default_cache_dir
from recstream.inference.model import ModelConfig
from recstream.inference.registry import Registry
from recstream.schemas.messages import InvalidEvent, InvalidMessage, parse_deletion, parse_event
from recstream.schemas.probes import ProbeServer
from recstream.schemas.state_lock import lock_state_dir
from recstream.schemas.topics import EVENTS, MODEL_UPDATES, USER_DELETIONS
from recstream.trainer.finetune import RoundCancelled
from recstream.trainer.item_catalogue import load_item_texts
from recstream.trainer.process_metrics import TrainerMetrics
from recstream.trainer.publish import model_update
from recstream.trainer.round import RoundOptions, RoundResult, run_round
from recstream.trainer.settings import TrainerSettings
from recstream.trainer.train import TrainConfig
from recstream.trainer.window import TrainingWindow, WindowBounds

log = logging.getLogger("recstream.trainer")
_MAX_POLL_RECORDS = 5000
_LAG_EVERY_S = 5.0
_RETRY_AFTER_ERROR_S = 30.0
_KEEP_REJECTIONS = 20
#: ``/healthz`` fails when the main loop has not come round for this long. A turn
#: is a poll (at most 0.5 s), a synced window write and, after a round, a publish
#: announcement bounded by its 30 s send timeout; training runs in its own thread.
STALLED_AFTER_S = 120.0


def kafka_producer(settings: TrainerSettings) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(acks="all", **settings.kafka.kafka_python_kwargs())


def send_update(producer: Any, info: Any, model_name: str, timeout_s: float = 30.0) -> None:
    """Announce a published version (key: the model name, so updates stay in order)."""
    update = model_update(info, model_name)
    producer.send(MODEL_UPDATES, key=model_name.encode(),
                  value=update.model_dump_json().encode()).get(timeout=timeout_s)


class ContinuousTrainer:
    def __init__(self, settings: TrainerSettings, stop: threading.Event,
                 metrics: TrainerMetrics | None = None) -> None:
        self.s = settings
        self.stop = stop
        self.metrics = metrics or TrainerMetrics()
        self.registry = Registry(settings.registry)
        self.window = TrainingWindow(settings.window_dir,
                                     WindowBounds(settings.window_events, settings.window_days))
        self.state = _read_state(settings.state_file)
        self._future: cf.Future[RoundResult] | None = None
        self._last_round_end = time.monotonic()
        self._not_before = 0.0
        self._consumer: Any = None
        self._producer: Any = None
        self._last_turn = time.monotonic()
        self._polled = False

    # ---- probes (called from the metrics server's thread) -----------------

    def alive(self) -> bool:
        """Liveness: the main loop came round within :data:`STALLED_AFTER_S`
        (start-up, before the loop, counts as alive)."""
        return time.monotonic() - self._last_turn < STALLED_AFTER_S

    def ready(self) -> bool:
        """Readiness: consuming (a first poll has returned) and not stopping."""
        return self._polled and not self.stop.is_set()

    # ---- the loop --------------------------------------------------------

    def run(self) -> None:
        from kafka import KafkaConsumer

        s = self.s
        log.info("trainer: window %s holds %d users, %d events (%d not trained on); "
                 "registry %s current %s", s.window_dir, self.window.n_users,
                 self.window.n_events, self.window.pending(), s.registry,
                 getattr(self.registry.current(), "version", None))
        self._update_window_gauges()
        self._consumer = KafkaConsumer(
            EVENTS, USER_DELETIONS,
            group_id=s.group,
            enable_auto_commit=False,  # commit only after the window write is durable
            auto_offset_reset="earliest",
            session_timeout_ms=6000,  # docs/embedded-broker.md: JoinGroup is held for half of it
            heartbeat_interval_ms=2000,
            fetch_max_wait_ms=200,
            group_instance_id=s.kafka.group_instance_id,
            **s.kafka.kafka_python_kwargs(),
        )
        self._producer = kafka_producer(s)
        self._announce_current()
        pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="round")
        last_lag = 0.0
        try:
            while not self.stop.is_set():
                self._last_turn = time.monotonic()
                batch = self._consumer.poll(timeout_ms=500, max_records=_MAX_POLL_RECORDS)
                self._polled = True
                if batch:
                    self._ingest(batch)
                    self._commit()
                if time.monotonic() - last_lag > _LAG_EVERY_S:
                    self._update_lag()
                    last_lag = time.monotonic()
                if self._future is not None and self._future.done():
                    self._finish(self._future)
                    self._future = None
                if self._future is None and self._due():
                    self._future = self._start_round(pool)
        finally:
            self.stop.set()  # a running round sees it at its next step and gives up
            if self._future is not None:
                try:
                    self._future.exception(timeout=60)
                    # A round past training publishes anyway: announce what it published.
                    self._finish(self._future)
                except cf.TimeoutError:
                    log.warning("the running round did not stop within 60 s")
            pool.shutdown(wait=False, cancel_futures=True)
            self._consumer.close(autocommit=False)
            self._producer.close(timeout=10)
            self.window.close()
            log.info("trainer stopped")

    def _announce_current(self) -> None:
        """Announce CURRENT if the last process published or rolled back without
        announcing it (stopped in between): a scorer must not miss a version."""
        current = self.registry.current()
        if current is None or self.state.get("announced") == current.version:
            return
        try:
            send_update(self._producer, current, self.s.model_name)
            self.state["announced"] = current.version
            _write_state(self.s.state_file, self.state)
            log.info("announced current version %s", current.version)
        except Exception:
            log.exception("could not announce current version %s", current.version)

    # ---- consuming -------------------------------------------------------

    def _ingest(self, batch: dict[Any, list[Any]]) -> None:
        events, deletions = [], []
        for tp, records in batch.items():
            for rec in records:
                if tp.topic == EVENTS:
                    self.metrics.events_consumed.inc()
                    try:
                        events.append(parse_event(rec.value))
                    except InvalidEvent as exc:
                        self.metrics.events_malformed.labels(exc.reason).inc()
                elif tp.topic == USER_DELETIONS:
                    try:
                        deletions.append(parse_deletion(rec.value).user_id)
                    except InvalidMessage:
                        pass  # the worker dead-letters bad deletion records
        result = self.window.apply(events)
        self.metrics.events_added.inc(result.added)
        self.metrics.events_duplicate.inc(result.duplicates)
        self.metrics.events_stale.inc(result.stale)
        if deletions:
            # After this poll's events, so a deletion wins over events it raced with.
            gone = self.window.delete_users(deletions)
            self.metrics.users_deleted.inc(len(set(deletions)))
            log.info("deleted %d users from the window (%d were in it)", len(set(deletions)), gone)
        self._update_window_gauges()

    def _commit(self) -> None:
        from kafka.errors import CommitFailedError

        try:
            self._consumer.commit()
        except CommitFailedError as exc:
            # A rebalance took the partitions: they are re-read, and dedupe drops the repeats.
            log.warning("offset commit failed (%s); records will be redelivered", exc)

    def _update_window_gauges(self) -> None:
        self.metrics.window_users.set(self.window.n_users)
        self.metrics.window_events.set(self.window.n_events)
        self.metrics.pending_events.set(self.window.pending())

    def _update_lag(self) -> None:
        parts = [tp for tp in self._consumer.assignment() if tp.topic == EVENTS]
        if not parts:
            return
        try:
            ends = self._consumer.end_offsets(parts)
            self.metrics.lag.set(sum(max(0, ends[tp] - self._consumer.position(tp)) for tp in parts))
        except Exception as exc:  # noqa: BLE001 - a metric must never stop the trainer
            log.debug("lag unavailable: %s", exc)

    # ---- rounds ------------------------------------------------------------

    def _due(self) -> bool:
        now = time.monotonic()
        pending = self.window.pending()
        if self.stop.is_set() or now < self._not_before or pending <= 0:
            return False
        return pending >= self.s.every_events or now - self._last_round_end >= 60 * self.s.every_minutes

    def _options(self) -> RoundOptions:
        s = self.s
        scratch = ModelConfig(n_items=1, max_len=s.max_len, d_model=s.d_model, n_heads=s.heads,
                              n_layers=s.layers, use_text=s.items is not None)
        train = TrainConfig(lr=s.lr, batch_size=s.batch_size, max_epochs=s.epochs,
                            time_budget_s=s.budget_s, progress=sys.stderr.isatty())
        texts = load_item_texts(s.items) if s.items is not None else None
        return RoundOptions(train=train, scratch=scratch, tolerance=s.tolerance,
                            min_holdout=s.min_holdout, onnx=s.onnx, fp16=s.fp16, texts=texts,
                            cache_dir=default_cache_dir())

    def _start_round(self, pool: cf.ThreadPoolExecutor) -> cf.Future[RoundResult]:
        dropped = self.window.sweep()
        if dropped:
            log.info("window: %d events aged out", dropped)
            self._update_window_gauges()
        self.state["rounds"] = int(self.state.get("rounds", 0)) + 1
        upto, trained = self.window.seq, self.window.trained_seq
        return pool.submit(run_round, self.window, self.registry, self._options(), upto, trained,
                           self.stop, self.state["rounds"])

    def _finish(self, future: cf.Future[RoundResult]) -> None:
        self._last_round_end = time.monotonic()
        m = self.metrics
        try:
            res = future.result()
        except RoundCancelled:
            return
        except Exception as exc:
            log.exception("round failed; next try in %.0f s", _RETRY_AFTER_ERROR_S)
            m.finetune_runs.labels("error").inc()
            m.rejected.labels("error").inc()
            self._not_before = time.monotonic() + _RETRY_AFTER_ERROR_S
            self._record({"reason": "error", "detail": f"{type(exc).__name__}: {exc}"}, None)
            return
        if res.advance:
            self.window.set_trained_seq(res.upto_seq)
            self._update_window_gauges()
        if res.loss is not None:
            m.last_loss.set(res.loss)
        m.round_seconds.set(res.facts.get("round_seconds", 0.0))
        for model, figures in (("candidate", res.candidate), ("current", res.current)):
            for metric in ("ndcg@10", "hr@10"):
                if figures is not None:
                    m.validation.labels(model, metric).set(float(figures[metric]))
        d = res.decision
        if res.published is not None:
            m.finetune_runs.labels("published").inc()
            info = res.published
            try:
                send_update(self._producer, info, self.s.model_name)
                self.state["announced"] = info.version
            except Exception:
                log.exception("published %s but could not announce it (retried at the next "
                              "start)", info.version)
            m.mark_published()
            pruned = self.registry.prune(self.s.keep)
            f = res.facts
            log.info("published %s (%s: %s) in %.1f s (train %.1f, eval %.1f, export+publish "
                     "%.1f)%s", info.version, d.reason, d.detail, f.get("round_seconds", 0),
                     f.get("train_seconds", 0), f.get("eval_seconds", 0),
                     f.get("publish_seconds", 0), f"; pruned {', '.join(pruned)}" if pruned else "")
        else:
            if not res.advance:  # nothing trainable yet: wait for more data, not a hot loop
                self._not_before = time.monotonic() + _RETRY_AFTER_ERROR_S
            m.finetune_runs.labels("rejected" if res.advance else "skipped").inc()
            m.rejected.labels(d.reason).inc()
            log.warning("round %s: kept %s, candidate not published: %s: %s",
                        res.facts.get("round"), res.parent, d.reason, d.detail)
        self._record({"reason": d.reason, "detail": d.detail, "published": d.publish}, res)

    def _record(self, outcome: dict[str, Any], res: RoundResult | None) -> None:
        entry = {
            "at_ms": int(time.time() * 1000),
            **outcome,
            **({"version": res.published.version if res.published else None,
                "parent": res.parent, "candidate": res.candidate, "current": res.current,
                "loss": res.loss, **res.facts} if res is not None else {}),
        }
        self.state["last_round"] = entry
        if entry.get("version"):
            self.state["last_published"] = entry
        elif not outcome.get("published"):
            self.state["rejections"] = (self.state.get("rejections", []) + [entry])[-_KEEP_REJECTIONS:]
        _write_state(self.s.state_file, self.state)


def _read_state(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _write_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    os.replace(tmp, path)


def run_trainer(settings: TrainerSettings, stop: threading.Event | None = None) -> None:
    """The process body: metrics server, torch threads, the loop until ``stop``."""
    import torch

    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    # The ONNX exporter logs every graph pass at INFO: one publish, hundreds of lines.
    for name in ("onnx_ir", "onnxscript", "torch.onnx", "kafka"):
        logging.getLogger(name).setLevel(logging.WARNING)
    stop = stop or threading.Event()
    metrics = TrainerMetrics()
    held = lock_state_dir(settings.state_dir, "trainer")  # before the window opens
    server = None
    try:
        trainer = ContinuousTrainer(settings, stop, metrics)
        if settings.metrics_port:
            server = ProbeServer(metrics.registry, settings.metrics_port, live=trainer.alive,
                                 ready=trainer.ready)
        trainer.run()
    finally:
        if server is not None:
            server.close()
        held.close()
