"""The dlt destination that hands each batch of a component to the llmspell writer.

A dlt custom destination on parquet (dlt's arrow fast path: each batch arrives as a pyarrow
RecordBatch with the source's columns and types). The destination is a named class whose
sink is a module-level function, so dlt records an importable reference
(`destinations.llmspell_destination.llmspell_postgres`) and `dlt pipeline ... info|trace|
load-package` re-creates it in another process without a warning.

The sink returns only after the batch is committed in PostgreSQL: what dlt reports as
loaded is in the target. Parallelism is dlt's own: the extract writes several files per
table and the loader runs `workers` jobs at once (`parallel` strategy), each job's batches
on its thread's own connection. The batches go to whatever `Delivery` the running copy stage
registered with `delivering`; outside a run the sink refuses. Any error is terminal: dlt must
not retry a batch, because the engine rolls the whole run back instead. dlt's own state and
tables never reach PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import dlt
import pyarrow as pa
from dlt.common.configuration import configspec
from dlt.common.configuration.specs import CredentialsConfiguration
from dlt.common.destination.client import DestinationClientDwhConfiguration
from dlt.common.destination.exceptions import DestinationTerminalException
from dlt.common.exceptions import SignalReceivedException
from dlt.destinations.impl.destination.configuration import CustomDestinationClientConfiguration
from dlt.destinations.impl.destination.destination import DestinationClient

DESTINATION_NAME = "llmspell_postgres"


class Delivery(Protocol):
    """What receives a run's batches and, once every job is loaded, completes the load."""

    def deliver(self, table: str, batch: pa.RecordBatch) -> None:
        """Write one batch of `table`; committed when this returns."""

    def complete(self, load_id: str) -> None:
        """Every batch is delivered: check the target (validation). Raising fails the load."""


_active: Delivery | None = None


@contextmanager
def delivering(delivery: Delivery) -> Iterator[None]:
    """Route the sink's batches to `delivery` for the duration of one `pipeline.run`."""
    global _active
    if _active is not None:
        raise RuntimeError("a migration is already delivering in this process")
    _active = delivery
    try:
        yield
    finally:
        _active = None


def sink(items: pa.RecordBatch, table: dict) -> None:
    """dlt's destination callable: one batch of one component table."""
    delivery = _active
    if delivery is None:
        raise DestinationTerminalException(
            f"{table['name']}: no llmspell-migrate run is delivering in this process"
        )
    try:
        delivery.deliver(table["name"], items)
    except SignalReceivedException:
        raise
    except Exception as exc:
        raise DestinationTerminalException(f"{table['name']}: {type(exc).__name__}: {exc}") from exc


class LlmspellClient(DestinationClient):
    """dlt's custom-destination client whose `complete_load` is the run's validation.

    dlt calls `complete_load` after every job of the package loaded and before it marks the
    package loaded ("before such commit is done, the data with `load_id` is invalid"), so a
    validation failure shows in `dlt pipeline ... trace` as a failed load, never a completed
    one."""

    def complete_load(self, load_id: str) -> None:
        if _active is not None:
            _active.complete(load_id)


@configspec
class TargetReference(CredentialsConfiguration):
    """No secret here: the sink writes through the engine's connections. Shown by dlt's load
    info as the place the data went."""

    def __str__(self) -> str:
        return "the migration target's"


@configspec
class LlmspellDestinationConfiguration(
    CustomDestinationClientConfiguration, DestinationClientDwhConfiguration
):
    """A custom destination that has a dataset, so dlt's load info and trace name `llmspell`."""

    credentials: TargetReference = None


class llmspell_postgres(dlt.destinations.destination):  # noqa: N801 - named like dlt factories
    """The llmspell destination; constructible without arguments (as dlt's CLI does)."""

    @property
    def client_class(self) -> type[DestinationClient]:
        return LlmspellClient

    def __init__(self, batch_size: int = 1000, **kwargs) -> None:
        kwargs.setdefault("destination_name", DESTINATION_NAME)
        kwargs.pop("destination_callable", None)
        super().__init__(
            destination_callable=sink,
            batch_size=batch_size,
            loader_file_format="parquet",
            loader_parallelism_strategy="parallel",
            max_table_nesting=0,
            naming_convention="direct",
            skip_dlt_columns_and_tables=True,
            spec=LlmspellDestinationConfiguration,
            **kwargs,
        )
