"""The dlt destination that hands each batch of a component to the llmspell writer.

Built with `@dlt.destination` on parquet (dlt's arrow fast path: the batch arrives as a
pyarrow RecordBatch with the source's columns and types), one batch at a time and one job
at a time (`sequential`), so batches of a component are written in order on one
connection. Any error is terminal: dlt must not retry a batch on its own, because the engine
rolls the whole run back instead. dlt's own state and tables never reach PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable

import dlt
import pyarrow as pa
from dlt.common.destination.exceptions import DestinationTerminalException
from dlt.common.exceptions import SignalReceivedException

DESTINATION_NAME = "llmspell_postgres"


def llmspell_postgres(write_batch: Callable[[pa.RecordBatch], None], batch_size: int):
    """A dlt destination instance that calls `write_batch` with batches of `batch_size` rows."""

    def sink(items: pa.RecordBatch, table) -> None:
        try:
            write_batch(items)
        except SignalReceivedException:
            raise
        except Exception as exc:
            raise DestinationTerminalException(
                f"{table['name']}: {type(exc).__name__}: {exc}"
            ) from exc

    # The plain `destination` factory (not a class synthesized by the decorator): its type is
    # importable, so `dlt pipeline ... info|trace|load-package` can re-create it later.
    return dlt.destinations.destination(
        destination_callable=sink,
        destination_name=DESTINATION_NAME,
        batch_size=batch_size,
        loader_file_format="parquet",
        loader_parallelism_strategy="sequential",
        max_table_nesting=0,
        naming_convention="direct",
        skip_dlt_columns_and_tables=True,
    )
