//! The portal: Bind, `Execute(max_rows)` again and again, each `DataRow`
//! decoded in place, straight from the read buffer, into the Arrow
//! builders, batches cut by rows or bytes and sent on with their permits.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::{Buf, BytesMut};
use postgres_protocol::message::{backend, frontend};

use super::connection::{frame_len, io_error, protocol, server_error, Connection};
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

/// What comes next in the read buffer, after the rows decoded there.
enum Buffered {
    /// The batch is full.
    Full,
    /// An incomplete message: read the socket.
    More,
    /// A complete message other than a row.
    Other,
}

impl<'a> Batching<'a> {
    fn new(
        schema: &'a SchemaRef,
        builders: &'a mut [ColumnBuilder],
        limits: &'a BatchLimits,
    ) -> Self {
        Batching {
            schema,
            builders,
            limits,
            rows: 0,
            bytes: 0,
            rows_before: 0,
            rejects: Vec::new(),
        }
    }

    /// Decode the complete `DataRow`s at the front of `read` in place (no
    /// message object per row), until the batch is full or something else
    /// comes.
    fn rows_in(&mut self, read: &mut BytesMut) -> Result<Buffered> {
        let mut at = 0;
        let next = loop {
            let rest = &read[at..];
            let Some(n) = frame_len(rest) else {
                break Buffered::More;
            };
            if rest[0] != b'D' {
                break Buffered::Other;
            }
            let full = self.row(rest.get(5..n).ok_or_else(|| protocol("short DataRow"))?)?;
            at += n;
            if full {
                break Buffered::Full;
            }
        };
        read.advance(at);
        Ok(next)
    }

    /// Decode one row (a `DataRow`'s body) into the builders; true when the
    /// batch is full.
    #[inline]
    fn row(&mut self, body: &[u8]) -> Result<bool> {
        let count = body
            .get(..2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]) as usize);
        if count != Some(self.builders.len()) {
            return Err(protocol(
                "DataRow with another number of columns than described",
            ));
        }
        let mut at = 2;
        for b in self.builders.iter_mut() {
            let len = body
                .get(at..at + 4)
                .ok_or_else(|| protocol("short DataRow"))?;
            let len = i32::from_be_bytes(len.try_into().expect("4 bytes"));
            at += 4;
            let value = match usize::try_from(len) {
                Ok(len) => {
                    let v = body
                        .get(at..at + len)
                        .ok_or_else(|| protocol("short DataRow"))?;
                    at += len;
                    Some(v)
                }
                // -1: NULL.
                Err(_) => None,
            };
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
        self.bytes += body.len();
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
        let mut batch = Batching::new(schema, builders, limits);
        let error;
        loop {
            // Decode every complete row already in the buffer before reading
            // the socket again.
            let message = match batch.rows_in(&mut self.read)? {
                Buffered::Full => {
                    batch.cut(tx).await?;
                    continue;
                }
                Buffered::More => {
                    self.fill().await?;
                    continue;
                }
                Buffered::Other => self.message().await?,
            };
            match message {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::Int32Type;
    use arrow_array::Array;
    use arrow_schema::Schema;

    use super::*;
    use crate::memory::ByteSize;
    use crate::source::pgtypes::PgKind;

    /// A `DataRow` message of `values` (None: NULL).
    fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut body = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            match v {
                Some(v) => {
                    body.extend((v.len() as i32).to_be_bytes());
                    body.extend(*v);
                }
                None => body.extend((-1i32).to_be_bytes()),
            }
        }
        let mut m = vec![b'D'];
        m.extend((body.len() as u32 + 4).to_be_bytes());
        m.extend(body);
        m
    }

    fn builders() -> Vec<ColumnBuilder> {
        vec![
            ColumnBuilder::new("n", PgKind::Int4, 4),
            ColumnBuilder::new("s", PgKind::Text { padded: false }, 4),
        ]
    }

    fn limits(rows: usize, dead_letter: bool) -> BatchLimits {
        BatchLimits {
            rows,
            bytes: usize::MAX,
            budget: Budget::new(ByteSize(1 << 30), 1),
            dead_letter,
        }
    }

    #[test]
    fn rows_are_decoded_from_the_buffer_up_to_a_partial_message() {
        let schema: SchemaRef = Arc::new(Schema::empty());
        let mut b = builders();
        let limits = limits(3, false);
        let mut batch = Batching::new(&schema, &mut b, &limits);
        let one = 1i32.to_be_bytes();
        let two = 2i32.to_be_bytes();
        let mut read = BytesMut::new();
        read.extend(data_row(&[Some(&one), Some("é a".as_bytes())]));
        read.extend(data_row(&[Some(&two), None]));
        let third = data_row(&[None, Some(b"z")]);
        read.extend(&third[..7]);
        assert!(matches!(batch.rows_in(&mut read).unwrap(), Buffered::More));
        // The partial message is kept, whole rows are consumed.
        assert_eq!(&read[..], &third[..7]);
        read.extend(&third[7..]);
        read.extend(b"s\0\0\0\x04"); // PortalSuspended
                                     // The third row fills the batch (3 rows): the message after it waits.
        assert!(matches!(batch.rows_in(&mut read).unwrap(), Buffered::Full));
        assert_eq!(&read[..], b"s\0\0\0\x04");
        assert!(matches!(batch.rows_in(&mut read).unwrap(), Buffered::Other));
        assert_eq!(batch.rows, 3);
        let n = b[0].finish();
        let s = b[1].finish();
        let (n, s) = (n.as_primitive::<Int32Type>(), s.as_string::<i32>());
        assert_eq!((n.value(0), n.value(1), n.is_null(2)), (1, 2, true));
        assert_eq!((s.value(0), s.is_null(1), s.value(2)), ("é a", true, "z"));
    }

    #[test]
    fn a_malformed_row_is_a_protocol_error_and_a_bad_value_names_its_column() {
        let schema: SchemaRef = Arc::new(Schema::empty());
        let one = 1i32.to_be_bytes();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            // One column where two were described.
            (data_row(&[Some(&one)]), "number of columns"),
            // A value longer than its message.
            (
                {
                    let mut m = data_row(&[Some(&one), Some(b"ab")]);
                    let at = m.len() - 6;
                    m[at..at + 4].copy_from_slice(&9i32.to_be_bytes());
                    m
                },
                "short DataRow",
            ),
            // Text that is not UTF-8.
            (data_row(&[Some(&one), Some(b"a\xffb")]), "not valid UTF-8"),
        ];
        for (message, expected) in cases {
            let mut b = builders();
            let limits = limits(10, false);
            let mut batch = Batching::new(&schema, &mut b, &limits);
            let mut read = BytesMut::from(&message[..]);
            let e = batch
                .rows_in(&mut read)
                .err()
                .expect("an error")
                .to_string();
            assert!(e.contains(expected), "{e}");
        }
        // Set aside with dead letters on: the row stays, its value NULL.
        let mut b = builders();
        let limits = limits(10, true);
        let mut batch = Batching::new(&schema, &mut b, &limits);
        let mut read = BytesMut::from(&data_row(&[Some(&one), Some(b"a\xffb")])[..]);
        assert!(matches!(batch.rows_in(&mut read).unwrap(), Buffered::More));
        assert_eq!((batch.rows, batch.rejects.len()), (1, 1));
        assert_eq!(batch.rejects[0].1.column, "s");
        assert!(b[1].finish().is_null(0));
    }
}
