"""The dlt destination that hands each batch of a component to the llmspell writer.

A dlt custom destination on parquet (dlt's arrow fast path: each batch arrives as a pyarrow
RecordBatch with the source's columns and types). The destination is a named class whose
sink is a module-level function, so dlt records an importable reference
(`destinations.llmspell_destination.llmspell_postgres`) and `dlt pipeline ... info|trace|
load-package` re-creates it in another process without a warning.

The sink returns only after the batch is committed in PostgreSQL: what dlt reports as
loaded is in the target. Parallelism is dlt's own: the extract writes several files per
table and the loader runs `workers` jobs at once (`parallel` strategy), each job's batches
on its thread's own connection. The batches go to the `Delivery` the copy stage gives the
destination it builds for its run (`llmspell_postgres(delivery=...)`); a destination built
without one (dlt's command line, in another process) refuses every batch. Any error is
terminal: dlt must not retry a batch, because the engine rolls the whole run back instead.
dlt's own state and tables never reach PostgreSQL.
"""

from __future__ import annotations

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


def sink(items: pa.RecordBatch, table: dict) -> None:
    """dlt's destination callable, as dlt's command line re-creates the destination in
    another process: there no run is delivering, and a batch is refused."""
    raise DestinationTerminalException(
        f"{table['name']}: no llmspell-migrate run is delivering in this process"
    )


def _delivering_to(delivery: Delivery):
    """The sink of one run: its batches to `delivery`, any error terminal for dlt."""

    def deliver(items: pa.RecordBatch, table: dict) -> None:
        try:
            delivery.deliver(table["name"], items)
        except SignalReceivedException:
            raise
        except Exception as exc:
            raise DestinationTerminalException(
                f"{table['name']}: {type(exc).__name__}: {exc}"
            ) from exc

    return deliver


class LlmspellClient(DestinationClient):
    """dlt's custom-destination client whose `complete_load` is the run's completion.

    dlt calls `complete_load` after every job of the package loaded and before it marks the
    package loaded ("before such commit is done, the data with `load_id` is invalid"), so a
    validation failure shows in `dlt pipeline ... trace` as a failed load, never a completed
    one. The destination hands its client the run's `Delivery` (`bind`)."""

    delivery: Delivery | None = None

    def bind(self, delivery: Delivery | None) -> LlmspellClient:
        if delivery is not None:
            self.delivery = delivery
            self.destination_callable = _delivering_to(delivery)
        return self

    def complete_load(self, load_id: str) -> None:
        if self.delivery is not None:
            self.delivery.complete(load_id)


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
    """The llmspell destination; constructible without arguments (as dlt's CLI does).
    `delivery`: the run its batches and its load's completion go to (none in dlt's CLI)."""

    @property
    def client_class(self) -> type[DestinationClient]:
        return LlmspellClient

    def client(self, schema, initial_config=None) -> LlmspellClient:
        return super().client(schema, initial_config).bind(self.delivery)

    def __init__(self, batch_size: int = 1000, delivery: Delivery | None = None, **kwargs) -> None:
        self.delivery = delivery
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
