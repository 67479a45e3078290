//! How the stats API talks to ClickHouse: every query carries ClickHouse's
//! `max_execution_time` (`query_max_execution_secs`) and a query id of its own, and a query
//! whose request goes away (the client hung up, the answer timed out) is killed, so that
//! nobody can keep ClickHouse busy by asking and hanging up. Dropping the HTTP request alone
//! does not do it: 18.16 runs a query to its end after its client went away (the
//! `cancel_http_readonly_queries_on_client_close` setting is newer), hence `KILL QUERY`.
//!
//! ClickHouse's error texts are logged with the request id, never sent to the client.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::error::ApiError;
use crate::request_id::request_id;

/// Extra time the service waits past `max_execution_time` before it gives up on an answer.
const GRACE: Duration = Duration::from_secs(5);

/// The query service's connection to ClickHouse.
#[derive(Clone)]
pub struct Db {
    /// With `max_execution_time`.
    client: clickhouse::Client,
    /// Without it, for `KILL QUERY` and for background work (the rollup).
    plain: clickhouse::Client,
    max_execution: Duration,
}

static NEXT_QUERY: AtomicU64 = AtomicU64::new(0);

impl Db {
    pub fn new(client: clickhouse::Client, max_execution_secs: u64) -> Self {
        Self {
            client: client
                .clone()
                .with_setting("max_execution_time", max_execution_secs.to_string()),
            plain: client,
            max_execution: Duration::from_secs(max_execution_secs),
        }
    }

    /// The client without a time limit, for work no request waits on.
    pub fn background(&self) -> &clickhouse::Client {
        &self.plain
    }

    /// A client for one query, with its own query id; see [`Tracked`].
    pub fn track(&self) -> Tracked {
        let id = format!(
            "glimpse-{}-{}",
            request_id(),
            NEXT_QUERY.fetch_add(1, Ordering::Relaxed)
        );
        Tracked {
            client: self.client.clone().with_setting("query_id", id.clone()),
            id,
            killer: self.plain.clone(),
            limit: self.max_execution + GRACE,
            done: AtomicBool::new(false),
        }
    }
}

/// One query's client. Run the query with [`run`](Self::run); if that is dropped before the
/// query finished (the request went away) or gives up on it, the query is killed.
pub struct Tracked {
    pub client: clickhouse::Client,
    id: String,
    killer: clickhouse::Client,
    limit: Duration,
    done: AtomicBool,
}

impl Tracked {
    /// Awaits `query` (made with [`client`](Self::client)), giving up past the time limit.
    pub async fn run<T, E: Into<ApiError>>(
        &self,
        query: impl Future<Output = Result<T, E>>,
    ) -> Result<T, ApiError> {
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(self.limit, query).await;
        crate::observe::clickhouse_took(started.elapsed());
        match answer {
            Ok(result) => {
                self.done.store(true, Ordering::SeqCst);
                result.map_err(Into::into)
            }
            Err(_) => Err(ApiError::Timeout(self.limit - GRACE)),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.done.load(Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (killer, id) = (self.killer.clone(), std::mem::take(&mut self.id));
        runtime.spawn(async move {
            let kill = killer
                .query("KILL QUERY WHERE query_id = ? ASYNC")
                .bind(&id)
                .execute();
            match tokio::time::timeout(Duration::from_secs(10), kill).await {
                Ok(Ok(())) => tracing::debug!(query_id = %id, "abandoned query killed"),
                Ok(Err(error)) => {
                    tracing::warn!(%error, query_id = %id, "cannot kill an abandoned query")
                }
                Err(_) => {
                    tracing::warn!(query_id = %id, "cannot kill an abandoned query: no answer")
                }
            }
        });
    }
}
