//! Rows for `LiteLLM_SpendLogs`, queued on the request path and written in batches by the
//! background writer, never by a request. The queue is bounded: when it is full a row is
//! dropped, counted and logged rather than slowing requests down. A failed write keeps its
//! rows (up to a bound) for the next pass, so a database outage loses nothing short of that.

use std::collections::VecDeque;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tollgate_storage::{SpendLogRow, Store, StoreError};

/// Rows waiting for the writer, which drains them every second: room for a burst of
/// 20,000 requests a second.
const QUEUE_ROWS: usize = 20_000;
/// Rows kept across failed writes: about 100 MB at worst, minutes of an outage at full load.
const RETRY_ROWS: usize = 100_000;

#[derive(Debug)]
pub struct SpendLog {
    sender: mpsc::Sender<SpendLogRow>,
    receiver: Mutex<mpsc::Receiver<SpendLogRow>>,
    retry: Mutex<VecDeque<SpendLogRow>>,
    /// Rows dropped; shown on `/metrics` as `tollgate_spend_log_rows_dropped_total`.
    dropped: Counter,
}

impl Default for SpendLog {
    fn default() -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_ROWS);
        Self { sender, receiver: Mutex::new(receiver), retry: Mutex::default(), dropped: Counter::default() }
    }
}

impl SpendLog {
    /// A spend log that counts its drops on `dropped` (the gateway's metric).
    pub fn counting(dropped: Counter) -> Self {
        Self { dropped, ..Self::default() }
    }

    /// Queues a row without waiting.
    pub fn push(&self, row: SpendLogRow) {
        if self.sender.try_send(row).is_err() {
            self.count_dropped(1);
        }
    }

    /// Rows waiting for the writer: queued, and kept from failed writes.
    pub fn waiting(&self) -> u64 {
        let queued = QUEUE_ROWS.saturating_sub(self.sender.capacity());
        let kept = self.retry.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len();
        (queued + kept) as u64
    }

    /// Rows dropped because the queue or the retry buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    fn count_dropped(&self, rows: u64) {
        let before = self.dropped.inc_by(rows);
        // Log at powers of two: an outage does not become a log flood.
        if (before + rows).is_power_of_two() || before == 0 {
            tracing::error!(
                dropped = before + rows,
                "spend log rows dropped: the writer cannot keep up or the database is away"
            );
        }
    }

    /// Writes what is queued (and what failed before) in one transaction; returns rows written.
    pub async fn write(&self, store: &Store) -> Result<usize, StoreError> {
        let mut rows: Vec<SpendLogRow> = {
            let mut retry = self.retry.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            retry.drain(..).collect()
        };
        {
            let mut receiver = self.receiver.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            while let Ok(row) = receiver.try_recv() {
                rows.push(row);
            }
        }
        let rows: std::sync::Arc<[SpendLogRow]> = rows.into();
        if let Err(error) = store.insert_spend_logs(rows.clone()).await {
            let kept = rows.len();
            // Cloning a row shares its text: the batch is kept without copying it.
            self.keep(rows.iter().cloned());
            tracing::debug!(kept, "spend log rows kept for the next pass");
            return Err(error);
        }
        Ok(rows.len())
    }

    /// Keeps rows for the next pass, dropping the oldest beyond the bound.
    fn keep(&self, rows: impl IntoIterator<Item = SpendLogRow>) {
        let mut retry = self.retry.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        retry.extend(rows);
        let excess = retry.len().saturating_sub(RETRY_ROWS);
        if excess > 0 {
            retry.drain(..excess);
            drop(retry);
            self.count_dropped(excess as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: usize) -> SpendLogRow {
        let now = chrono::Utc::now().naive_utc();
        SpendLogRow {
            request_id: id.to_string().into(),
            call_type: "acompletion",
            api_key: "".into(),
            spend: 0.0,
            prompt_tokens: 0,
            completion_tokens: 0,
            start_time: now,
            end_time: now,
            model: "".into(),
            model_group: "".into(),
            model_id: "".into(),
            custom_llm_provider: "".into(),
            api_base: "".into(),
            end_user: None,
            team_id: None,
            organization_id: None,
            key_alias: None,
            user_id: None,
            tags: Vec::new(),
            cache_read_input_tokens: 0,
            cache_creation_input_tokens: 0,
            error: None,
            guardrail: None,
            usage_estimated: false,
            status: "success",
            cache_hit: false,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let counter = Counter::default();
        let log = SpendLog::counting(counter.clone());
        for id in 0..QUEUE_ROWS + 3 {
            log.push(row(id));
        }
        assert_eq!(log.dropped(), 3);
        assert_eq!(counter.get(), 3, "the metric sees the same count");
    }

    #[test]
    fn the_retry_buffer_keeps_the_newest_rows() {
        let log = SpendLog::default();
        log.keep((0..RETRY_ROWS + 2).map(row));
        let retry = log.retry.lock().unwrap();
        assert_eq!(retry.len(), RETRY_ROWS);
        assert_eq!(&*retry.front().unwrap().request_id, "2", "the oldest went");
        drop(retry);
        assert_eq!(log.dropped(), 2);
    }
}
