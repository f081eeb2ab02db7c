//! A small scripted TCP proxy in front of a real server, for faults a real server will not
//! produce on demand: a refusing or silent greeting, garbage, a reply that stops mid-way, an
//! SMTP server that offers no STARTTLS, a server that is down (the proxy stops listening, so
//! connections are refused), a connection that dies the moment the client sends a given command.
//! Each new connection takes the next queued fault; with none queued it passes bytes through
//! untouched, so recovery is seen against the real server.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// What one connection gets.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Accept and never send a byte.
    Silent,
    /// Send these bytes, then close.
    Say(&'static [u8]),
    /// Pass through until the server has sent this many bytes, then forward nothing more.
    StallAfter(usize),
    /// Play an SMTP server whose EHLO offers AUTH but no STARTTLS.
    SmtpWithoutStartTls,
}

/// The proxy; stops accepting when dropped.
pub struct FaultProxy {
    pub port: u16,
    upstream: u16,
    faults: Arc<Mutex<VecDeque<Fault>>>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// Commands on which the next connection that sends them is cut; and how many were.
    cuts: Arc<Cuts>,
    /// The accepting thread while the proxy listens; `None` while it refuses connections.
    acceptor: Mutex<Option<Acceptor>>,
}

/// A thread accepting on the proxy's port; the listener closes when the thread ends.
struct Acceptor {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port in front of `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let proxy = FaultProxy {
            port,
            upstream,
            faults: Arc::default(),
            open: Arc::default(),
            cuts: Arc::default(),
            acceptor: Mutex::new(None),
        };
        proxy.accept_on(listener);
        proxy
    }

    fn accept_on(&self, listener: TcpListener) {
        let (faults, open, upstream) = (self.faults.clone(), self.open.clone(), self.upstream);
        let cuts = self.cuts.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::spawn({
            let stop = stop.clone();
            move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    if let Ok(clone) = client.try_clone() {
                        open.lock().unwrap().push(clone);
                    }
                    let fault = faults.lock().unwrap().pop_front();
                    let cuts = cuts.clone();
                    thread::spawn(move || serve(client, upstream, fault, &cuts));
                }
            }
        });
        *self.acceptor.lock().unwrap() = Some(Acceptor { stop, thread });
    }

    /// Queues faults for the next connections, in order.
    pub fn push(&self, faults: &[Fault]) {
        self.faults.lock().unwrap().extend(faults.iter().cloned());
    }

    /// Cuts the connection that next sends `command` (a line starting with a tag and it),
    /// before the server sees it: the client's command goes out and the answer never comes.
    pub fn cut_at_command(&self, command: &'static str) {
        self.cuts.armed.lock().unwrap().push(command);
    }

    /// Connections cut by [`cut_at_command`](Self::cut_at_command) so far.
    pub fn commands_cut(&self) -> usize {
        self.cuts.done.load(Ordering::SeqCst)
    }

    /// The lines clients have sent through connections without a fault, in order (what an
    /// IMAP client asked, for counting its commands).
    pub fn client_lines(&self) -> Vec<String> {
        self.cuts.lines.lock().unwrap().clone()
    }

    /// Cuts every open connection, so a client with a pooled session must reconnect.
    pub fn cut_all(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Closes the listening socket and every open connection: from now on a connection to
    /// the proxy's port is refused, as with a server that is down. Returns once that holds.
    pub fn stop_listening(&self) {
        if let Some(acceptor) = self.acceptor.lock().unwrap().take() {
            acceptor.stop.store(true, Ordering::SeqCst);
            // Wakes the blocking accept, which then sees `stop` and drops the listener.
            let _ = TcpStream::connect(("127.0.0.1", self.port));
            let _ = acceptor.thread.join();
        }
        self.cut_all();
    }

    /// Listens again on the same port after [`stop_listening`](Self::stop_listening).
    pub fn listen_again(&self) {
        // The port was free a moment ago; another process could have taken it since, so retry
        // a little (bounded) before giving up with a clear message.
        let mut last = None;
        for _ in 0..40 {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(listener) => return self.accept_on(listener),
                Err(e) => last = Some(e),
            }
            thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("cannot listen on port {} again: {last:?}", self.port);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop_listening();
    }
}

/// Commands armed by [`FaultProxy::cut_at_command`], shared by the proxy's connections.
#[derive(Default)]
struct Cuts {
    armed: Mutex<Vec<&'static str>>,
    done: std::sync::atomic::AtomicUsize,
    /// Every line clients sent through passing connections (the first 100,000).
    lines: Mutex<Vec<String>>,
}

impl Cuts {
    /// Takes what a client sent next (`partial` holds the unfinished line of its connection):
    /// records its complete lines, and says whether one carries an armed command (which is
    /// then disarmed).
    fn hit(&self, partial: &mut Vec<u8>, chunk: &[u8]) -> bool {
        partial.extend_from_slice(chunk);
        let mut complete = Vec::new();
        while let Some(end) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            complete.push(String::from_utf8_lossy(&line).trim_end().to_string());
        }
        {
            let mut lines = self.lines.lock().unwrap();
            let room = 100_000usize.saturating_sub(lines.len());
            lines.extend(complete.iter().take(room).cloned());
        }
        let mut armed = self.armed.lock().unwrap();
        let found = armed.iter().position(|command| {
            complete.iter().any(|l| {
                l.split_once(' ')
                    .is_some_and(|(_, rest)| rest.starts_with(command))
            })
        });
        if let Some(i) = found {
            armed.remove(i);
            self.done.fetch_add(1, Ordering::SeqCst);
        }
        found.is_some()
    }
}

fn serve(mut client: TcpStream, upstream: u16, fault: Option<Fault>, cuts: &Arc<Cuts>) {
    // The proxy keeps a clone of every connection (for cut_all), so dropping ours would not
    // close it: shut it down explicitly when done.
    let closer = client.try_clone().ok();
    match fault {
        None => {
            let (cuts, mut partial) = (cuts.clone(), Vec::new());
            relay_watching(
                client,
                upstream,
                |_| usize::MAX,
                move |c| !cuts.hit(&mut partial, c),
            );
        }
        Some(Fault::StallAfter(n)) => pass(client, upstream, n),
        Some(Fault::Silent) => {
            let mut sink = [0u8; 1024];
            while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
        }
        Some(Fault::Say(bytes)) => {
            let _ = client.write_all(bytes);
        }
        Some(Fault::SmtpWithoutStartTls) => {
            let _ = client.write_all(b"220 fake.example.test ESMTP\r\n");
            let mut reader = BufReader::new(client.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                let reply: &[u8] = if line.to_ascii_uppercase().starts_with("EHLO") {
                    b"250-fake.example.test\r\n250 AUTH PLAIN LOGIN\r\n"
                } else {
                    b"221 2.0.0 bye\r\n"
                };
                if client.write_all(reply).is_err() || reply.starts_with(b"221") {
                    break;
                }
                line.clear();
            }
        }
    }
    if let Some(c) = closer {
        let _ = c.shutdown(Shutdown::Both);
    }
}

/// Forwards both ways; stops forwarding the server's bytes after `limit` of them.
fn pass(client: TcpStream, upstream: u16, limit: usize) {
    let mut sent = 0;
    relay(client, upstream, |chunk| {
        let take = chunk.len().min(limit.saturating_sub(sent));
        sent += take;
        take
    });
}

/// Forwards both ways, showing each chunk the server sends to `each` first, which says how
/// many of its bytes to pass on (and may take its time: that delays the reply).
pub fn relay(client: TcpStream, upstream: u16, each: impl FnMut(&[u8]) -> usize) {
    relay_watching(client, upstream, each, |_| true);
}

/// [`relay`], also showing each chunk the client sends to `forward`: false cuts the
/// connection both ways before that chunk reaches the server.
fn relay_watching(
    client: TcpStream,
    upstream: u16,
    mut each: impl FnMut(&[u8]) -> usize,
    mut forward: impl FnMut(&[u8]) -> bool + Send + 'static,
) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let client_side = client.try_clone().unwrap();
    let up = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = c_read.read(&mut buf) {
            if n == 0 || !forward(&buf[..n]) || s_write.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = s_write.shutdown(Shutdown::Both);
        let _ = client_side.shutdown(Shutdown::Both);
    });
    let (mut s_read, mut c_write) = (server, client);
    let mut buf = [0u8; 4096];
    while let Ok(n) = s_read.read(&mut buf) {
        if n == 0 {
            break;
        }
        let take = each(&buf[..n]).min(n);
        if take > 0 && c_write.write_all(&buf[..take]).is_err() {
            break;
        }
    }
    let _ = c_write.shutdown(Shutdown::Both);
    let _ = up.join();
}
