"""What every vramwatch DAG shares, declared once: the matrix they read, their start, owner, retries and tags, and
a request record's fields as a DAG's params. It lives in plugins/ because every Airflow component puts that folder
on sys.path (as alert_connections does); it defines no plugin, and only dags/ import it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.decorators.python import _PythonDecoratedOperator
from airflow.sdk.bases.decorator import task_decorator_factory

from vramwatch.config import TASK_TIMEOUT

# The matrix every DAG runs (its models, quants, modes, queue): a shipped name or a YAML path.
MATRIX_NAME = os.environ.get("VRAMWATCH_MATRIX", "seed")
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")
TAGS = ["vramwatch", "llama.cpp"]  # each DAG adds what it does ("benchmark", "bisect", "gpu")
DEFAULT_ARGS = {
    "owner": "vramwatch",
    "retries": 2,  # network blips (PyPI, warehouse) and lost workers; a bench crash is a result, not a retry
    "retry_delay": timedelta(minutes=5),
    "show_return_value_in_logs": False,  # records are large; each stage logs its own one-line result
    "execution_timeout": TASK_TIMEOUT,  # no task waits without end (a held lock, a hung child); longer ones say so
}



class BenchOperator(_PythonDecoratedOperator):
    """A task that runs bench children (a night's bench, a bisection's candidates): when Airflow kills it (a timeout,
    "mark failed", a worker shutdown), they go too. Each child runs in a session of its own, out of reach of the
    signal Airflow sends the task's process group when it kills it; build steps (pip, cmake) are in that group."""

    def on_kill(self) -> None:
        from vramwatch.bench.runner import end_children

        end_children()


bench_task = functools.partial(task_decorator_factory, decorated_operator_class=BenchOperator)  # as @task

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def params_of(record: type) -> dict[str, Any]:
    """One Param per field of a request record (records.BisectRequest): its default, its JSON type (null too when
    it is optional), its choices, and its help as the description. A field without a default starts empty."""
    from airflow.sdk import Param

    hints = typing.get_type_hints(record)
    params = {}
    for field in dataclasses.fields(record):
        schema = _schema(hints[field.name])
        if field.metadata.get("choices"):
            schema["enum"] = list(field.metadata["choices"])
        default = "" if field.default is dataclasses.MISSING else field.default
        params[field.name] = Param(default, description=field.metadata.get("help", ""), **schema)
    return params


def _schema(hint: Any) -> dict[str, Any]:
    """The JSON schema of a field's type: a Literal's values, a plain type, or either of them or null."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Literal:
        return {"enum": list(args)}
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return {"type": ["null", _JSON_TYPES[inner]]}
    return {"type": _JSON_TYPES[hint]}


def publish_task(after: Any) -> Any:
    """The task the nightly and the bisect DAG both end with: the static site brought up to date (vramwatch publish)
    once `after` is done, whatever its outcome (a night stored but not alerted, a search that found no culprit, are
    published too). Call it inside the DAG."""
    from airflow.sdk import task

    @task(trigger_rule="all_done")
    def publish() -> dict:
        from vramwatch import pipeline

        return pipeline.run_task(pipeline.publish)

    published = publish()
    after >> published
    return published
