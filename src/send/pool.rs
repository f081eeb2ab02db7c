//! Submission connections kept briefly for the next canary of the same account.
//!
//! With a thousand probes submitting through one account, a fresh connection per canary cost
//! a TCP connect, a TLS handshake and an AUTH every time (about 50 a second at a 60 s interval
//! and three classes): a fifth of the agent's CPU went to OpenSSL, and the submission server
//! ran a session per canary. A connection that has just submitted a canary is therefore kept
//! and handed to the next canary of the same account (see `Submitter::session` for why without
//! a `NOOP` first).
//!
//! It is kept only while fresh: idle at most [`MAX_IDLE`], open at most [`MAX_AGE`], at most
//! [`MAX_MESSAGES`] canaries. So a probe on its own (one round a minute) still connects, starts
//! TLS and logs in on every round, which is part of what it monitors, and a busy agent re-does
//! all three on every connection at least once per [`MAX_AGE`]: a certificate or password
//! that stopped working shows up within that time.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::transport::smtp::client::AsyncSmtpConnection;
use tokio::time::Instant;

/// Longest a connection waits unused for the next canary.
pub const MAX_IDLE: Duration = Duration::from_secs(2);
/// Longest a connection is used, from its connect.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Most canaries submitted over one connection.
pub const MAX_MESSAGES: u32 = 100;
/// Most connections kept per account: the agent never submits more at once (see
/// [`crate::submissions`]).
pub const MAX_KEPT: usize = 16;

/// A connection the pool can end: SMTP's, or a test's stand-in.
pub trait Quit: Send + 'static {
    /// Says goodbye (QUIT) and closes.
    fn quit(&mut self) -> impl Future<Output = ()> + Send;
}

impl Quit for AsyncSmtpConnection {
    async fn quit(&mut self) {
        let _ = AsyncSmtpConnection::quit(self).await;
    }
}

/// A connection with what decides whether it may be used again.
pub struct Session<C> {
    /// Connected, secured and logged in.
    pub conn: C,
    /// When it connected.
    pub opened: Instant,
    /// Canaries submitted over it so far.
    pub sent: u32,
    /// Whether it was kept from an earlier canary (and may have been closed by the server
    /// since).
    pub reused: bool,
    /// What its TLS handshake settled, if it had one.
    pub tls: Option<super::SessionTls>,
    /// Whether the server offered PIPELINING (RFC 2920): `MAIL`, `RCPT` and `DATA` go out
    /// in one write.
    pub pipelining: bool,
}

/// A kept connection and when it was last used.
struct Kept<C> {
    session: Session<C>,
    returned: Instant,
}

impl<C> Kept<C> {
    fn fresh(&self, now: Instant) -> bool {
        now.duration_since(self.returned) < MAX_IDLE
            && now.duration_since(self.session.opened) < MAX_AGE
    }
}

/// The kept connections of one submission account (server, port, TLS mode and login).
pub struct Pool<C> {
    inner: Mutex<Inner<C>>,
}

struct Inner<C> {
    kept: Vec<Kept<C>>,
    /// Whether a task is on its way to close what goes stale.
    reaper: bool,
}

impl<C: Quit> Default for Pool<C> {
    fn default() -> Self {
        Pool {
            inner: Mutex::new(Inner {
                kept: Vec::new(),
                reaper: false,
            }),
        }
    }
}

impl<C: Quit> Pool<C> {
    /// The most recently used fresh connection, if any; stale ones are closed on the way.
    pub fn take(&self, quit_within: Duration) -> Option<Session<C>> {
        let (found, stale) = {
            let mut inner = self.lock();
            let stale = inner.drop_stale(Instant::now());
            (inner.kept.pop(), stale)
        };
        close(stale, quit_within);
        found.map(|k| Session {
            reused: true,
            ..k.session
        })
    }

    /// Keeps `session` for the next canary unless it has done its share; what goes stale is
    /// closed within [`MAX_IDLE`] (plus `quit_within` for its QUIT).
    pub fn give_back(self: &Arc<Self>, session: Session<C>, quit_within: Duration) {
        let now = Instant::now();
        let kept = Kept {
            session,
            returned: now,
        };
        let worn = kept.session.sent >= MAX_MESSAGES || !kept.fresh(now);
        let start_reaper = {
            let mut inner = self.lock();
            if worn || inner.kept.len() >= MAX_KEPT {
                drop(inner);
                close(vec![kept], quit_within);
                return;
            }
            inner.kept.push(kept);
            !std::mem::replace(&mut inner.reaper, true)
        };
        if start_reaper {
            let pool = Arc::clone(self);
            tokio::spawn(async move { pool.reap(quit_within).await });
        }
    }

    /// Closes connections as they go stale, until none is kept.
    async fn reap(&self, quit_within: Duration) {
        loop {
            tokio::time::sleep(MAX_IDLE).await;
            let (stale, again) = {
                let mut inner = self.lock();
                let stale = inner.drop_stale(Instant::now());
                inner.reaper = !inner.kept.is_empty();
                (stale, inner.reaper)
            };
            close(stale, quit_within);
            if !again {
                return;
            }
        }
    }

    /// Closes every kept connection now (the agent is stopping).
    pub async fn close_all(&self, quit_within: Duration) {
        let all = std::mem::take(&mut self.lock().kept);
        quit_all(all, quit_within).await;
    }

    /// Connections kept right now.
    #[cfg(test)]
    pub fn kept(&self) -> usize {
        self.lock().kept.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<C>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<C> Inner<C> {
    /// Takes the connections that are no longer fresh out of the pool.
    fn drop_stale(&mut self, now: Instant) -> Vec<Kept<C>> {
        let (fresh, stale) = self.kept.drain(..).partition(|k| k.fresh(now));
        self.kept = fresh;
        stale
    }
}

/// Says QUIT on each (bounded by `within`) and closes them, off the caller's path.
fn close<C: Quit>(stale: Vec<Kept<C>>, within: Duration) {
    if !stale.is_empty() {
        tokio::spawn(quit_all(stale, within));
    }
}

/// Says QUIT on each, all at once, each bounded by `within`.
async fn quit_all<C: Quit>(kept: Vec<Kept<C>>, within: Duration) {
    let quits = kept.into_iter().map(|mut k| async move {
        if tokio::time::timeout(within, k.session.conn.quit())
            .await
            .is_err()
        {
            tracing::debug!("a kept SMTP connection did not answer QUIT; dropped");
        }
    });
    futures::future::join_all(quits).await;
}

#[cfg(test)]
mod tests;
