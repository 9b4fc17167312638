//! The disclosure log `utlevering`: one row per query, changes request, file download and
//! export, appended to the kommune's own warehouse; and the server's other appends (approvals),
//! made by the same writer thread. The server queues a row before it answers
//! and a writer task appends the queue every second (one commit per batch, not per request);
//! on shutdown the queue is written before the process exits (docs/ARCHITECTURE.md, "Sharing").

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::config::Pipeline;
use crate::error::Result;
use crate::schema::{Table, UTLEVERING};

/// One disclosure. Never a fødselsnummer or a name: which pupils were disclosed follows from
/// the table and version.
#[derive(Debug, Clone)]
pub struct Disclosure {
    pub time: DateTime<Utc>,
    pub recipient: String,
    pub share: Option<String>,
    pub table: String,
    pub version: Option<i64>,
    pub from_version: Option<i64>,
    pub operation: &'static str,
    pub files: i64,
    pub rows: i64,
    pub restriction: Option<String>,
    pub request_id: String,
}

/// The rows as a batch of `utlevering`.
fn batch(rows: &[Disclosure]) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&Disclosure) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from_iter(rows.iter().map(f)))
    };
    let l = |f: &dyn Fn(&Disclosure) -> Option<i64>| -> ArrayRef {
        Arc::new(Int64Array::from_iter(rows.iter().map(f)))
    };
    let cols: Vec<ArrayRef> = vec![
        crate::delta::timestamps(rows.iter().map(|d| Some(d.time.timestamp_micros()))),
        s(&|d| Some(d.recipient.clone())),
        s(&|d| d.share.clone()),
        s(&|d| Some(d.table.clone())),
        l(&|d| d.version),
        l(&|d| d.from_version),
        s(&|d| Some(d.operation.to_string())),
        l(&|d| Some(d.files)),
        l(&|d| Some(d.rows)),
        s(&|d| d.restriction.clone()),
        s(&|d| Some(d.request_id.clone())),
    ];
    Ok(RecordBatch::try_new(UTLEVERING.arrow_schema(), cols)?)
}

/// Appends disclosures to a pipeline's `utlevering` now.
pub async fn append(pipeline: &Pipeline, rows: &[Disclosure], run_id: &str) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    crate::delta::write(
        pipeline,
        &UTLEVERING,
        vec![batch(rows)?],
        deltalake::protocol::SaveMode::Append,
        run_id,
        "utlevering",
    )
    .await?;
    Ok(())
}

enum Message {
    Row(Arc<Pipeline>, Disclosure),
    Flush(oneshot::Sender<()>),
    /// Rows to append to a table now (an approval), with where to say how it went.
    Append(
        Arc<Pipeline>,
        &'static Table,
        RecordBatch,
        oneshot::Sender<Result<(), String>>,
    ),
}

/// The queue of the server's disclosures.
#[derive(Clone)]
pub struct Log {
    tx: mpsc::UnboundedSender<Message>,
}

impl Log {
    /// Starts the writer, on a thread of its own (a Delta commit's future is not `Send`).
    pub fn start(run_id: String) -> Result<Log> {
        let (tx, rx) = mpsc::unbounded_channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                crate::Error::Other(format!("cannot start the disclosure log writer: {e}"))
            })?;
        std::thread::Builder::new()
            .name("utlevering".into())
            .spawn(move || rt.block_on(writer(rx, run_id)))
            .map_err(|e| {
                crate::Error::Other(format!("cannot start the disclosure log writer: {e}"))
            })?;
        Ok(Log { tx })
    }

    pub fn record(&self, pipeline: &Arc<Pipeline>, d: Disclosure) {
        if self.tx.send(Message::Row(pipeline.clone(), d)).is_err() {
            tracing::error!("the disclosure log writer has stopped; a disclosure was not recorded");
        }
    }

    /// Appends `batch` to a table of `pipeline` now, on the writer's thread, and says how it went.
    pub async fn append_now(
        &self,
        pipeline: &Arc<Pipeline>,
        table: &'static Table,
        batch: RecordBatch,
    ) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Message::Append(pipeline.clone(), table, batch, tx))
            .map_err(|_| crate::Error::Other("the table writer has stopped".into()))?;
        rx.await
            .map_err(|_| crate::Error::Other("the table writer has stopped".into()))?
            .map_err(crate::Error::Other)
    }

    /// Waits until everything queued so far is written (or failed and was reported).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn writer(mut rx: mpsc::UnboundedReceiver<Message>, run_id: String) {
    let mut pending: Vec<(Arc<Pipeline>, Disclosure)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let mut waiting = Vec::new();
        tokio::select! {
            m = rx.recv() => match m {
                Some(Message::Row(p, d)) => { pending.push((p, d)); continue; }
                Some(Message::Flush(done)) => waiting.push(done),
                Some(Message::Append(p, t, b, done)) => { append_one(&p, t, b, done, &run_id).await; continue; }
                None => { write_all(&mut pending, &run_id).await; return; }
            },
            _ = tick.tick() => {}
        }
        // Everything already queued goes with this write.
        while let Ok(m) = rx.try_recv() {
            match m {
                Message::Row(p, d) => pending.push((p, d)),
                Message::Flush(done) => waiting.push(done),
                Message::Append(p, t, b, done) => append_one(&p, t, b, done, &run_id).await,
            }
        }
        write_all(&mut pending, &run_id).await;
        for w in waiting {
            let _ = w.send(());
        }
    }
}

async fn append_one(
    p: &Pipeline,
    t: &'static Table,
    b: RecordBatch,
    done: oneshot::Sender<Result<(), String>>,
    run_id: &str,
) {
    let written = crate::delta::write(
        p,
        t,
        vec![b],
        deltalake::protocol::SaveMode::Append,
        run_id,
        t.name,
    )
    .await
    .map(|_| ())
    .map_err(|e| e.to_string());
    let _ = done.send(written);
}

/// Writes the pending rows, one commit per warehouse table; rows that could not be written stay
/// pending (and are retried at the next tick).
async fn write_all(pending: &mut Vec<(Arc<Pipeline>, Disclosure)>, run_id: &str) {
    if pending.is_empty() {
        return;
    }
    let mut by_table: std::collections::BTreeMap<String, (Arc<Pipeline>, Vec<Disclosure>)> =
        Default::default();
    for (p, d) in pending.drain(..) {
        by_table
            .entry(p.table_url(UTLEVERING.name).to_string())
            .or_insert_with(|| (p.clone(), Vec::new()))
            .1
            .push(d);
    }
    for (url, (p, rows)) in by_table {
        if let Err(e) = append(&p, &rows, run_id).await {
            tracing::error!(table = %url, rows = rows.len(), error = %e, "cannot write the disclosure log; retrying");
            pending.extend(rows.into_iter().map(|d| (p.clone(), d)));
        }
    }
}
