//! The bounded queue between request handlers and the writer. Handlers never wait on it and
//! never talk to ClickHouse: a full queue is answered with `503`, not with a slow request.

use tokio::sync::mpsc;

use glimpse_core::schema::EventRow;

/// The handlers' end of the queue. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Queue {
    tx: mpsc::Sender<EventRow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("the write queue is full")]
    Full,
    #[error("the collector is shutting down")]
    Closed,
}

/// A queue holding at most `capacity` rows, and the receiver the writer drains.
pub fn queue(capacity: usize) -> (Queue, mpsc::Receiver<EventRow>) {
    let (tx, rx) = mpsc::channel(capacity);
    (Queue { tx }, rx)
}

impl Queue {
    /// Enqueues all rows or none of them, without waiting.
    pub fn try_push(&self, rows: Vec<EventRow>) -> Result<(), QueueError> {
        if rows.is_empty() {
            return Ok(());
        }
        let permits = self.tx.try_reserve_many(rows.len()).map_err(|e| match e {
            mpsc::error::TrySendError::Full(()) => QueueError::Full,
            mpsc::error::TrySendError::Closed(()) => QueueError::Closed,
        })?;
        for (permit, row) in permits.zip(rows) {
            permit.send(row);
        }
        Ok(())
    }

    pub fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }

    /// Rows waiting for the writer.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_or_nothing() {
        let (q, mut rx) = queue(3);
        q.try_push(vec![EventRow::default(); 2]).unwrap();
        assert_eq!(q.depth(), 2);
        assert_eq!(
            q.try_push(vec![EventRow::default(); 2]),
            Err(QueueError::Full)
        );
        assert_eq!(q.depth(), 2);
        q.try_push(vec![EventRow::default()]).unwrap();
        assert_eq!(q.depth(), 3);
        rx.close();
        assert_eq!(
            q.try_push(vec![EventRow::default()]),
            Err(QueueError::Closed)
        );
    }
}
