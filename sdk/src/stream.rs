//! Streamed results (protocol v5, §9.6 of `specs/protocol.md`): the rows of
//! one read-only statement, delivered in chunks as the consumer takes them,
//! with credit-based flow control so client memory stays bounded.

use crate::client::Client;
use crate::core::{Request, Response};
use crate::error::{Error, Result};
use crate::rows::{OwnedRow, SqlCost};
use crate::sql::{unexpected, Db};
use crate::value::{Params, Value};
use futures_channel::mpsc;
use futures_util::{Stream, StreamExt};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// How a stream's consumer names it to the driver (its request id is only
/// known to the driver, and commands are handled in order, so a token made
/// here can be used at once).
pub(crate) type StreamToken = u64;

/// Next stream token of this process.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(0);

/// What the driver forwards to a stream's consumer.
pub(crate) enum StreamItem {
    /// Rows (and, in the first chunk, the column names); `bytes` is what they
    /// count against the credit, returned once they are all taken.
    Rows { columns: Option<Vec<String>>, rows: Vec<Vec<Value>>, bytes: u64 },
    /// The stream's last message: `StreamDone` or the failure.
    End(Result<Response>),
}

/// The rows of a streamed statement, as a [`futures_util::Stream`] of
/// `Result<OwnedRow>` (also `next().await` without importing a trait).
///
/// Rows arrive in chunks; the client grants the engine a window of credit
/// (`ClientConfig::stream_credit_bytes`, or [`Db::with_stream_credit`]) and
/// returns credit only for rows this stream has yielded, so a slow consumer
/// holds at most about one window of rows in memory. Dropping the stream
/// before its end cancels it in the engine. A lost connection ends it with
/// [`Error::StreamInterrupted`]; rows already yielded stay valid.
pub struct RowStream {
    /// To report consumption and cancel.
    client: Client,
    /// This stream's name for the driver.
    token: StreamToken,
    /// Chunks and the end, from the driver.
    items: mpsc::UnboundedReceiver<StreamItem>,
    /// Column names (from the first chunk), shared by every yielded row.
    columns: Arc<[String]>,
    /// Rows of the current chunk not yet yielded.
    buffered: VecDeque<Vec<Value>>,
    /// Credit bytes of the current chunk, reported once it is all yielded.
    chunk_bytes: u64,
    /// The end arrived (or the stream failed): nothing more will come.
    done: bool,
    /// The whole stream's cost, once it finished.
    cost: Option<SqlCost>,
}

impl std::fmt::Debug for RowStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowStream")
            .field("columns", &self.columns)
            .field("buffered", &self.buffered.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl RowStream {
    pub(crate) fn open(client: Client, request: Request, opts: crate::core::RequestOptions) -> RowStream {
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        let (tx, items) = mpsc::unbounded();
        // If the client is gone the sender is dropped with the command, and
        // the first poll yields `Closed`.
        client.open_stream(request, opts, token, tx);
        RowStream {
            client,
            token,
            items,
            columns: Arc::from(Vec::new()),
            buffered: VecDeque::new(),
            chunk_bytes: 0,
            done: false,
            cost: None,
        }
    }

    /// The next row, `None` after the last one (or after the error that ended it).
    pub async fn next(&mut self) -> Option<Result<OwnedRow>> {
        StreamExt::next(self).await
    }

    /// Column names (known once the first chunk arrived).
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// What the whole stream cost the engine, once it finished.
    pub fn cost(&self) -> Option<SqlCost> {
        self.cost.clone()
    }

    /// Every row left, collected (the stream's point is not to, but handy in tests).
    pub async fn try_collect(mut self) -> Result<Vec<OwnedRow>> {
        let mut out = Vec::new();
        while let Some(row) = self.next().await {
            out.push(row?);
        }
        Ok(out)
    }
}

impl Stream for RowStream {
    type Item = Result<OwnedRow>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(values) = this.buffered.pop_front() {
                if this.buffered.is_empty() && this.chunk_bytes > 0 {
                    // The whole chunk is yielded: its bytes become credit again.
                    this.client.stream_consumed(this.token, std::mem::take(&mut this.chunk_bytes));
                }
                return Poll::Ready(Some(Ok(OwnedRow::new(this.columns.clone(), values))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match this.items.poll_next_unpin(cx) {
                Poll::Ready(Some(StreamItem::Rows { columns, rows, bytes })) => {
                    if let Some(c) = columns {
                        this.columns = c.into();
                    }
                    if rows.is_empty() {
                        if bytes > 0 {
                            this.client.stream_consumed(this.token, bytes);
                        }
                    } else {
                        this.buffered.extend(rows);
                        this.chunk_bytes = bytes;
                    }
                }
                Poll::Ready(Some(StreamItem::End(result))) => {
                    this.done = true;
                    match result {
                        Ok(Response::StreamDone { cost }) => {
                            this.cost = cost;
                            return Poll::Ready(None);
                        }
                        Ok(other) => return Poll::Ready(Some(Err(unexpected("stream", other)))),
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    }
                }
                Poll::Ready(None) => {
                    // The driver is gone (client closed).
                    this.done = true;
                    return Poll::Ready(Some(Err(Error::Closed)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for RowStream {
    fn drop(&mut self) {
        if !self.done {
            self.client.stream_cancel(self.token);
        }
    }
}

impl Db {
    /// Streams the rows of one read-only statement (protocol v5), from one
    /// snapshot on a reader connection. Rows are fetched as they are taken
    /// (credit-based flow control, see [`RowStream`]); drop the stream to
    /// cancel it. Below v5 the first item is
    /// [`Error::RemoteUnavailable`]; a statement that writes fails.
    ///
    /// ```no_run
    /// # async fn f(db: envoy_client::Db) -> envoy_client::Result<()> {
    /// use envoy_client::params;
    /// let mut rows = db.stream("SELECT id, body FROM events WHERE id > ? ORDER BY id", params![0]);
    /// while let Some(row) = rows.next().await {
    ///     let row = row?;
    ///     let id: i64 = row.get("id")?;
    /// }
    /// println!("cost: {:?}", rows.cost());
    /// # Ok(()) }
    /// ```
    pub fn stream(&self, sql: &str, params: impl Into<Params>) -> RowStream {
        let defaults = self.client.sql_defaults();
        let request = Request::SqlStream {
            actor_id: self.actor_id.clone(),
            generation: self.generation,
            statement: envoy_protocol::SqliteStatement { sql: sql.to_string(), params: params.into().0 },
            credit_bytes: self.stream_credit_bytes.unwrap_or(defaults.stream_credit_bytes),
            lease_ms: defaults.stream_lease_ms,
        };
        RowStream::open(self.client.clone(), request, self.opts)
    }
}

impl Client {
    fn stream_consumed(&self, token: StreamToken, bytes: u64) {
        let _ = self.shared.commands.unbounded_send(crate::driver::Command::StreamConsumed { token, bytes });
    }

    fn stream_cancel(&self, token: StreamToken) {
        let _ = self.shared.commands.unbounded_send(crate::driver::Command::StreamCancel { token });
    }

    /// Hands a stream to the driver.
    fn open_stream(
        &self,
        request: Request,
        opts: crate::core::RequestOptions,
        token: StreamToken,
        items: mpsc::UnboundedSender<StreamItem>,
    ) {
        let _ = self.shared.commands.unbounded_send(crate::driver::Command::OpenStream { request, opts, token, items });
    }
}
