//! The portal: Bind, `Execute(max_rows)` again and again, each `DataRow`
//! decoded in place into the Arrow builders, batches cut by rows or bytes
//! and sent on with their permits.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::{backend, frontend};

use super::connection::{io_error, protocol, server_error, Connection};
use super::{BatchLimits, BatchSender};
use crate::deadletter::Reject;
use crate::error::{Error, Result};
use crate::memory::Budget;
use crate::source::pgtypes::ColumnBuilder;
use crate::source::SourceBatch;

/// The portal the result is read from (closed by COMMIT).
const PORTAL: &str = "shiftload";

/// The batch being built.
struct Batching<'a> {
    schema: &'a SchemaRef,
    builders: &'a mut [ColumnBuilder],
    limits: &'a BatchLimits,
    rows: usize,
    bytes: usize,
    /// Rows of earlier batches.
    rows_before: u64,
    rejects: Vec<(usize, Reject)>,
}

impl Batching<'_> {
    /// Decode one row into the builders; true when the batch is full.
    #[inline]
    fn row(&mut self, row: &backend::DataRowBody) -> Result<bool> {
        let buffer = row.buffer();
        let mut ranges = row.ranges();
        for b in self.builders.iter_mut() {
            let range = ranges
                .next()
                .map_err(io_error)?
                .ok_or_else(|| protocol("short DataRow"))?;
            let value = range.map(|r| &buffer[r]);
            if let Err(message) = b.append(value) {
                if !self.limits.dead_letter {
                    return Err(Error::Value {
                        column: b.name.clone(),
                        row: format!(
                            "row {} of the result",
                            self.rows_before + self.rows as u64 + 1
                        ),
                        message,
                    });
                }
                b.append(None).expect("a NULL always appends");
                let reject = Reject {
                    row: 0,
                    key: String::new(),
                    column: b.name.clone(),
                    reason: message,
                };
                self.rejects.push((self.rows, reject));
            }
        }
        self.rows += 1;
        self.bytes += buffer.len();
        // Cut here when the batch's share of the budget is reached (wide
        // rows), not only at portal boundaries.
        Ok(self.rows >= self.limits.rows || self.bytes >= self.limits.bytes)
    }

    /// Hand the batch on (nothing when it is empty).
    async fn cut(&mut self, tx: &BatchSender) -> Result<()> {
        if self.rows_before > 0 && crate::failpoint::on("reader-panic") {
            panic!("failpoint reader-panic");
        }
        self.rows_before += self.rows as u64;
        self.bytes = 0;
        emit(
            self.schema,
            self.builders,
            &mut self.rows,
            &mut self.rejects,
            &self.limits.budget,
            tx,
        )
        .await
    }
}

impl Connection {
    /// Bind the parsed statement to a portal and stream it in batches.
    pub(super) async fn stream(
        &mut self,
        schema: &SchemaRef,
        builders: &mut [ColumnBuilder],
        limits: &BatchLimits,
        tx: &BatchSender,
    ) -> Result<()> {
        let fetch_rows = limits.rows as i32;
        let formats: Vec<i16> = builders.iter().map(ColumnBuilder::format).collect();
        // A named portal: Redshift ignores max_rows on the unnamed one and
        // sends every row at once.
        frontend::bind(
            PORTAL,
            "",
            [],
            std::iter::empty::<()>(),
            |_, _| unreachable!(),
            formats,
            &mut self.write,
        )
        .map_err(|_| protocol("cannot encode Bind"))?;
        // PostgreSQL: two executions outstanding, so the server works on the
        // next batch while this one is finished. Redshift: one at a time, as
        // its own drivers do (no second Execute while a portal is suspended).
        let ahead = if self.dialect.redshift { 1 } else { 2 };
        for _ in 0..ahead {
            frontend::execute(PORTAL, fetch_rows, &mut self.write).map_err(io_error)?;
        }
        frontend::flush(&mut self.write);
        self.flush().await?;
        let mut batch = Batching {
            schema,
            builders,
            limits,
            rows: 0,
            bytes: 0,
            rows_before: 0,
            rejects: Vec::new(),
        };
        let error;
        loop {
            // Decode every complete message already in the buffer before
            // reading the socket again.
            match self.message().await? {
                backend::Message::DataRow(row) => {
                    let full = batch.row(&row)?;
                    if full {
                        batch.cut(tx).await?;
                    }
                }
                backend::Message::PortalSuspended => {
                    frontend::execute(PORTAL, fetch_rows, &mut self.write).map_err(io_error)?;
                    frontend::flush(&mut self.write);
                    self.flush().await?;
                }
                backend::Message::CommandComplete(_) => {
                    error = None;
                    batch.cut(tx).await?;
                    // A second Execute (PostgreSQL) meets an exhausted
                    // portal; Sync closes the exchange.
                    frontend::sync(&mut self.write);
                    self.flush().await?;
                    break;
                }
                backend::Message::ErrorResponse(body) => {
                    error = Some(server_error(&body));
                    frontend::sync(&mut self.write);
                    self.flush().await?;
                    break;
                }
                _ => {}
            }
        }
        self.until_ready(error).await
    }

    /// Drain up to ReadyForQuery (the outstanding Execute's answer); the
    /// first error of the exchange.
    async fn until_ready(&mut self, mut error: Option<Error>) -> Result<()> {
        loop {
            match self.message().await? {
                backend::Message::ReadyForQuery(_) => break,
                backend::Message::ErrorResponse(body) if error.is_none() => {
                    error = Some(server_error(&body))
                }
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Finish the builders into a batch, wait for its permits, and send it
/// (waits while the pipeline is busy: backpressure).
async fn emit(
    schema: &SchemaRef,
    builders: &mut [ColumnBuilder],
    rows: &mut usize,
    rejects: &mut Vec<(usize, Reject)>,
    budget: &Budget,
    tx: &BatchSender,
) -> Result<()> {
    if *rows == 0 {
        return Ok(());
    }
    let columns = builders.iter_mut().map(ColumnBuilder::finish).collect();
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::Internal(e.to_string()))?;
    *rows = 0;
    let permit = budget.acquire(batch.get_array_memory_size()).await;
    // A closed channel means the consumer is gone; the producer is then
    // aborted, nothing more to do here.
    let batch = SourceBatch {
        batch,
        permit,
        rejects: std::mem::take(rejects),
    };
    let _ = tx.send(Ok(batch)).await;
    Ok(())
}
