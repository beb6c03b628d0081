//! Channels: how a rendered message leaves Restock. One module per channel.
//!
//! A channel classifies every failure as retryable, retry-after or permanent
//! ([`restock_core::retry::Failure`]) so dispatch can decide without parsing text.

pub mod email;
pub mod smtp;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use restock_core::retry::Failure;
use tokio::sync::Mutex;

/// A message ready to send by email.
#[derive(Debug, Clone)]
pub struct EmailMessage {
    pub to: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    /// Stable per notification, so a relay or mailbox can drop a duplicate that a
    /// crash between sending and recording might cause.
    pub message_id: String,
    pub list_unsubscribe: String,
}

/// Where emails go: the real transports, or memory (benchmarks and unit tests of
/// dispatch policy).
#[derive(Clone)]
pub enum EmailChannel {
    Transport(Arc<email::EmailTransport>),
    Memory(MemoryOutbox),
}

impl EmailChannel {
    pub async fn send(&self, msg: &EmailMessage) -> Result<(), Failure> {
        match self {
            EmailChannel::Transport(t) => t.send(msg).await,
            EmailChannel::Memory(m) => {
                m.record(msg.clone()).await;
                Ok(())
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            EmailChannel::Transport(t) => t.kind(),
            EmailChannel::Memory(_) => "memory",
        }
    }
}

/// Keeps sent messages in memory with the moment the first one was handed over.
#[derive(Clone, Default)]
pub struct MemoryOutbox {
    messages: Arc<Mutex<Vec<(std::time::Instant, EmailMessage)>>>,
    first_at: Arc<std::sync::OnceLock<std::time::Instant>>,
    count: Arc<AtomicU64>,
}

impl MemoryOutbox {
    async fn record(&self, msg: EmailMessage) {
        let _ = self.first_at.set(std::time::Instant::now());
        self.count.fetch_add(1, Ordering::SeqCst);
        self.messages
            .lock()
            .await
            .push((std::time::Instant::now(), msg));
    }

    pub async fn messages(&self) -> Vec<EmailMessage> {
        self.messages
            .lock()
            .await
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// When the `index`th message (0-based) was handed over.
    pub async fn sent_at(&self, index: usize) -> Option<std::time::Instant> {
        self.messages.lock().await.get(index).map(|(t, _)| *t)
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    pub fn first_sent_at(&self) -> Option<std::time::Instant> {
        self.first_at.get().copied()
    }
}
