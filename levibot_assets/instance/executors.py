"""Where a run's steps execute, chosen by `LEVIBOT_EXECUTOR`: the executor of every asset job.

- `multiprocess` (the default): each step in its own process on the run worker's host, independent
  steps in parallel (up to the CPU count). It needs nothing beyond the run worker, and a step that
  dies (the OOM killer during TFT training, a segfault in a native library) takes only its own
  process down: the run worker sees the failure and records it, and LightGBM/torch memory is given
  back to the host after every step. The steps fork from a server process (Dagster's `forkserver`
  start method) that has imported the code location and the data stack (STEP_PRELOAD) once per run:
  stock starts a fresh interpreter per step, about 1 s more each (BENCHMARKS.md section 1). LightGBM
  and torch are not preloaded: an OpenMP runtime that has started its threads does not survive a
  fork. `in_process` saves the rest of a step's start but one crashing step kills the whole run, so
  it is for tests and debugging.
- `celery`: steps become tasks on a Celery queue (`dagster`) that workers on any number of hosts
  consume (`celery -A levibot_assets.instance.executors:celery_app worker -Q dagster`); needs the `celery`
  extra, a broker (LEVIBOT_CELERY_BROKER, default redis://127.0.0.1:6379/0; results go to
  LEVIBOT_CELERY_BACKEND, default the broker) and a PostgreSQL instance the workers share.
- `k8s`: each step in its own Kubernetes Job (dagster-k8s `k8s_job_executor`, `k8s` extra); per-step
  pod settings come from the op tag `dagster-k8s/config` (tft_model on GPU nodes, docker/helm/values.yaml).

The variable is read when the definitions load: an unknown name is refused there, naming the
variable. The broker URL is read only when a run starts, inside the run worker, so it never enters
a run's snapshot or config; a URL that is printed (the broker is unreachable, a worker was lost)
has its password replaced by `***`.

Celery loses a step whose worker is killed (the message was acknowledged when the task started, and
dagster-celery would wait for its result forever). The executor here watches every started step:
the worker that started it (the task's STARTED state names it) must answer a ping at least every
LEVIBOT_CELERY_WORKER_LOST_S seconds (default 30). A lost step is queued again, once, for any other
worker (steps are idempotent: every file is written by atomic rename), and if it is lost again, or
no worker at all answers for that long while a step waits, the run fails naming the step, the
worker and the broker.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable

import dagster as dg

from levibot_assets.core.redaction import redact_text, redact_url
from levibot_assets.settings import Settings, SettingsError, executor_choice

EXECUTOR_ENV = "LEVIBOT_EXECUTOR"
BROKER_ENV = "LEVIBOT_CELERY_BROKER"
WORKER_LOST_ENV = "LEVIBOT_CELERY_WORKER_LOST_S"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
CELERY_QUEUE = "dagster"
CODE_LOCATION_MODULE = "levibot_assets.definitions"
PING_INTERVAL_S = 2.0
MAX_REQUEUES = 1
STEP_PRELOAD = [CODE_LOCATION_MODULE, "pyarrow.parquet"]  # the code location imports pandas and the assets
multiprocess_executor = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": STEP_PRELOAD}}}, name="multiprocess"
)


class ExecutorSettingError(SettingsError):
    """LEVIBOT_EXECUTOR names no executor, or one whose extra is not installed."""


class BrokerUnreachable(dg.DagsterError):
    """The Celery broker did not accept a connection when the run started."""


class CeleryWorkerLost(dg.DagsterError):
    """A step's Celery worker stopped answering, or no worker consumes the queue."""


def build_executor(name: str) -> dg.ExecutorDefinition:
    """The executor definition for `name` (Settings.executor); extras are imported only when chosen."""
    name = executor_choice(name)
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return multiprocess_executor
    if name == "celery":
        _require("dagster_celery", "celery")
        return levibot_celery_executor
    _require("dagster_k8s", "k8s")
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor


def _require(module: str, extra: str) -> None:
    try:
        __import__(module)
    except ImportError as exc:
        raise ExecutorSettingError(
            f"{EXECUTOR_ENV}={extra} needs the {module.replace('_', '-')} package: "
            f"pip install 'levibot_assets[{extra}]' ({exc})"
        ) from None


# --- Celery -------------------------------------------------------------------------------------


# Read when a run starts, in the process that launches the steps (and in each worker): the URLs may
# hold passwords, so they are never part of the code location or the instance's records.


def broker_url() -> str:
    return Settings.from_env().celery_broker or DEFAULT_BROKER


def backend_url() -> str:
    return Settings.from_env().celery_backend or broker_url()


def worker_lost_after_s() -> float:
    return Settings.from_env().celery_worker_lost_s


def celery_app_config() -> dict[str, Any]:
    """What both sides of the queue must agree on, beyond dagster-celery's defaults."""
    from dagster_celery.config import DEFAULT_CONFIG

    return {
        **DEFAULT_CONFIG,
        "task_track_started": True,  # the STARTED state names the worker: how a lost step is found
        "result_expires": 24 * 3600,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }


def make_celery_app():
    """dagster-celery's app (its queue, routes and execute_plan task) on the LEVIBOT_CELERY_* URLs.

    Workers run it with `celery -A levibot_assets.instance.executors:celery_app worker -Q dagster`; the
    code location is imported once in the worker's main process so its pool children start warm.
    """
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    executor = CeleryExecutor.for_cli(
        broker=broker_url(), backend=backend_url(), include=[CODE_LOCATION_MODULE], config_source=celery_app_config()
    )
    app = make_app(executor.app_args())
    create_task(app)
    return app


def __getattr__(name: str):
    """`celery_app` is built on first use: importing this module never needs dagster-celery."""
    if name == "celery_app":
        global celery_app
        celery_app = make_celery_app()
        return celery_app
    raise AttributeError(name)


def check_broker(app, url: str, timeout_s: float = 5.0) -> None:
    """Fail now, naming the (redacted) broker URL, when nothing accepts a connection there."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.5, timeout=timeout_s)
    except Exception as exc:  # kombu/redis raise several types; the cause is in the message
        raise BrokerUnreachable(
            f"{EXECUTOR_ENV}=celery: the Celery broker at {redact_url(url)} ({BROKER_ENV}) is not reachable: "
            f"{type(exc).__name__}: {redact_text(str(exc))}"
        ) from None


class _Liveness:
    """Which workers answer a ping, asked at most every PING_INTERVAL_S per question."""

    def __init__(self, app):
        self.app = app
        self._asked: dict[str | None, tuple[float, bool]] = {}

    def answers(self, worker: str | None) -> bool | None:
        """True/False for the worker (None: any worker); None when not asked again yet."""
        now = time.monotonic()
        asked = self._asked.get(worker)
        if asked and now - asked[0] < PING_INTERVAL_S:
            return None
        try:
            replies = self.app.control.ping(destination=[worker] if worker else None, timeout=1.5, limit=1)
        except Exception:  # the broker itself is gone: nobody answers
            replies = []
        alive = bool(replies)
        self._asked[worker] = (time.monotonic(), alive)
        return alive


class _WatchedStep:
    """An AsyncResult-like handle that re-queues its step once when its worker is lost."""

    def __init__(self, submit: Callable[[], Any], step_key: str, liveness: _Liveness, lost_after_s: float,
                 log, broker: str):
        self._submit, self.step_key, self._liveness = submit, step_key, liveness
        self._lost_after_s, self._log, self._broker = lost_after_s, log, broker
        self.result = submit()
        self.requeues = 0
        self._error: str | None = None
        self._last_answer = time.monotonic()
        self._worker: str | None = None

    def _state(self) -> tuple[str, str | None]:
        try:
            state = self.result.state
            info = self.result.info if state == "STARTED" else None
        except Exception:  # the result backend did not answer this time
            return "UNKNOWN", None
        worker = info.get("hostname") if isinstance(info, dict) else None
        return state, worker

    def ready(self) -> bool:
        if self._error is not None or self.result.ready():
            return True
        state, worker = self._state()
        if state not in ("PENDING", "STARTED", "RECEIVED"):
            return False
        if worker != self._worker:  # a (new) worker took the step: its clock starts now
            self._worker, self._last_answer = worker, time.monotonic()
        answered = self._liveness.answers(worker)
        if answered:
            self._last_answer = time.monotonic()
        if answered is False and time.monotonic() - self._last_answer > self._lost_after_s:
            self._lost(worker)
            return self._error is not None
        return False

    def _lost(self, worker: str | None) -> None:
        silent = f"for {self._lost_after_s:g}s ({WORKER_LOST_ENV})"
        if worker is None:
            self._error = (f'step "{self.step_key}" waited {silent} and no Celery worker consumes queue '
                           f'"{CELERY_QUEUE}" at {redact_url(self._broker)}')
            return
        if self.requeues >= MAX_REQUEUES:
            self._error = (f'Celery worker {worker} stopped answering {silent} while running step "{self.step_key}" '
                           f"(lost {self.requeues + 1} times; files are written atomically, so the step's "
                           "partitions hold either their previous or their new files): re-execute the run")
            return
        self._log.warning(f'Celery worker {worker} stopped answering {silent} while running step "{self.step_key}": '
                          "queued again for another worker")
        self.requeues += 1
        with contextlib.suppress(Exception):
            self.result.forget()
        self.result = self._submit()
        self._worker, self._last_answer = None, time.monotonic()

    def get(self):
        if self._error is not None:
            raise CeleryWorkerLost(self._error)
        return self.result.get(disable_sync_subtasks=False)

    def revoke(self):
        return self.result.revoke()


def _celery_executor_class():
    from dagster_celery.executor import CeleryExecutor, _submit_task

    class LevibotCeleryExecutor(CeleryExecutor):
        """dagster-celery's executor on the LEVIBOT_CELERY_* URLs, with lost-worker detection."""

        def __init__(self, retries, lost_after_s: float):
            super().__init__(retries=retries, broker=broker_url(), backend=backend_url(),
                             config_source=celery_app_config())
            self.lost_after_s = lost_after_s

        def execute(self, plan_context, execution_plan):
            from dagster_celery.core_execution_loop import core_celery_execution_loop
            from dagster_celery.make_app import make_app

            check_broker(make_app(self.app_args()), self.broker)
            liveness = _Liveness(make_app(self.app_args()))

            def submit(app, job_context, step, queue, priority, known_state):
                return _WatchedStep(
                    lambda: _submit_task(app, job_context, step, queue, priority, known_state),
                    step.key, liveness, self.lost_after_s, job_context.log, self.broker,
                )

            return core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=submit)

    return LevibotCeleryExecutor


def _levibot_celery_executor():
    from dagster._core.execution.retries import RetryMode, get_retries_config

    @dg.executor(
        name="celery",
        config_schema={"retries": get_retries_config()},
        requirements=dg.multiple_process_executor_requirements(),
    )
    def celery(init_context):
        """Steps as tasks on the Celery queue `dagster`; broker and backend read from LEVIBOT_CELERY_* at run start."""
        return _celery_executor_class()(
            retries=RetryMode.from_config(init_context.executor_config["retries"]),
            lost_after_s=worker_lost_after_s(),
        )

    return celery


def __dir__():
    return sorted([*globals(), "celery_app"])


# Built only when dagster-celery is importable; build_executor refuses `celery` otherwise.
try:
    levibot_celery_executor = _levibot_celery_executor()
except ImportError:  # pragma: no cover - dagster itself is always there
    levibot_celery_executor = None
