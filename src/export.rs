//! Writing rendered metrics where cron-mode collectors pick them up: a node_exporter textfile
//! or a Pushgateway.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::http::METRICS_CONTENT_TYPE;

/// Bound on the whole Pushgateway exchange.
const PUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes a node_exporter textfile atomically: a temporary file in the same directory, synced,
/// then renamed over the target, so the collector never reads half a file.
///
/// The textfile directory is often writable by other users (node_exporter's collector reads
/// what several jobs drop there), so the temporary is created exclusively (`O_CREAT|O_EXCL`,
/// which also refuses to follow a symlink planted at its name) under a random name: nobody can
/// make us write through their link or into their file. Mode 0644 whatever the umask, because
/// node_exporter usually runs as another user. A failed write removes its temporary.
pub fn write_textfile(path: &Path, text: &str) -> std::io::Result<()> {
    replace_file(path, text, TEXTFILE_MODE)
}

/// Replaces `path` whole with `text`, mode `mode`, the way [`write_textfile`] does (also used
/// for a rotated OAuth2 refresh token, mode 0600).
pub fn replace_file(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} names no file", path.display())))?;
    let (mut file, tmp) = create_temporary(dir, &name.to_string_lossy())?;
    let result = (|| {
        // Set on the open file, as the umask may have narrowed the mode given at creation.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Mode of the textfile: node_exporter, usually another user, must read it.
const TEXTFILE_MODE: u32 = 0o644;

/// Creates a new file `.NAME.RANDOM.tmp` in `dir`, never opening one that exists. node_exporter
/// only reads `*.prom`, so the name must not end in `.prom`.
fn create_temporary(dir: &Path, name: &str) -> std::io::Result<(std::fs::File, PathBuf)> {
    let mut last = None;
    for _ in 0..8 {
        let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(TEXTFILE_MODE)
            .open(&tmp)
        {
            Ok(file) => return Ok((file, tmp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("the loop ran"))
}

/// Why a push to the Pushgateway failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The base URL (with the group path appended) is not a valid URL.
    #[error("{url} is not a valid URL")]
    BadUrl {
        /// The URL as built from the base.
        url: String,
        /// What the URL parser said.
        #[source]
        source: hyper::http::Error,
    },
    /// The base URL is not `http://` (TLS to the Pushgateway is not supported).
    #[error("{base}: only http:// Pushgateway URLs are supported")]
    NotHttp {
        /// The base URL as given.
        base: String,
    },
    /// The base URL names no host.
    #[error("{base}: no host")]
    NoHost {
        /// The base URL as given.
        base: String,
    },
    /// The TCP connection could not be made.
    #[error("cannot connect to {authority}")]
    Connect {
        /// `host:port` of the Pushgateway.
        authority: String,
        /// What the network said.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange broke off.
    #[error("HTTP exchange with {authority} failed")]
    Http {
        /// `host:port` of the Pushgateway.
        authority: String,
        /// What the HTTP library said.
        #[source]
        source: hyper::Error,
    },
    /// The Pushgateway answered, but not with success.
    #[error("{url} answered {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        /// The URL pushed to.
        url: String,
        /// The HTTP status.
        status: hyper::StatusCode,
        /// The first line of the answer's body, which says why (may be empty).
        body: String,
    },
    /// No complete answer within the time allowed.
    #[error("no answer from {authority} within {timeout:?}")]
    Timeout {
        /// `host:port` of the Pushgateway.
        authority: String,
        /// The time allowed.
        timeout: Duration,
    },
}

/// Longest body line kept in a [`PushError::Status`]: enough for the Pushgateway's reason,
/// not a page of HTML from a proxy in front of it.
const BODY_LINE_MAX: usize = 200;

/// The first non-empty line of an error body, shortened to [`BODY_LINE_MAX`] characters.
fn first_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    crate::text::first_line(&text).map_or(String::new(), |line| {
        crate::text::printable(line, BODY_LINE_MAX)
    })
}

/// Replaces this agent's group on a Pushgateway: `PUT <base>/metrics/job/mailcanary/instance/<agent>`.
///
/// PUT, not POST, so series that disappeared from the agent disappear from the group too.
pub async fn push(base: &str, agent: &str, text: &str) -> Result<(), PushError> {
    let url = format!(
        "{}/metrics/job/mailcanary/instance/{agent}",
        base.trim_end_matches('/')
    );
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| PushError::BadUrl {
            url: url.clone(),
            source: e.into(),
        })?;
    if uri.scheme_str() != Some("http") {
        return Err(PushError::NotHttp { base: base.into() });
    }
    let authority = uri
        .authority()
        .ok_or_else(|| PushError::NoHost { base: base.into() })?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let http = |source| PushError::Http {
        authority: authority.to_string(),
        source,
    };
    let exchange = async {
        let stream = TcpStream::connect((authority.host(), port))
            .await
            .map_err(|source| PushError::Connect {
                authority: authority.to_string(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        tokio::spawn(conn);
        let request = Request::put(uri.path())
            .header(HOST, authority.as_str())
            .header(CONTENT_TYPE, METRICS_CONTENT_TYPE)
            .body(Full::new(Bytes::from(text.to_string())))
            .map_err(|source| PushError::BadUrl {
                url: url.clone(),
                source,
            })?;
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Err(PushError::Status {
            url: url.clone(),
            status,
            body: first_line(&body),
        })
    };
    tokio::time::timeout(PUSH_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(PushError::Timeout {
                authority: authority.to_string(),
                timeout: PUSH_TIMEOUT,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textfile_is_replaced_whole_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailcanary.prom");
        write_textfile(&path, "a 1\n").unwrap();
        write_textfile(&path, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("mailcanary.prom")]);
        assert!(write_textfile(&dir.path().join("missing/x.prom"), "a").is_err());
    }

    #[test]
    fn a_link_planted_at_the_old_predictable_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        // The name the temporary used to get: `.NAME.PID.tmp`.
        let planted = dir
            .path()
            .join(format!(".mailcanary.prom.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let path = dir.path().join("mailcanary.prom");
        write_textfile(&path, "a 1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file(), "the textfile must be a file of its own");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 1\n");
        assert!(std::fs::symlink_metadata(&planted).unwrap().is_symlink());
    }

    #[test]
    fn the_temporary_is_created_exclusively() {
        let dir = tempfile::tempdir().unwrap();
        let (_file, tmp) = create_temporary(dir.path(), "x.prom").unwrap();
        let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".x.prom.") && name.ends_with(".tmp"),
            "{name}"
        );
        let (_other, tmp2) = create_temporary(dir.path(), "x.prom").unwrap();
        assert_ne!(tmp, tmp2, "names are not reused");
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_and_the_mode_is_0644() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailcanary.prom");
        write_textfile(&path, "a 1\n").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        // A directory where the textfile should go: the rename fails.
        let blocked = dir.path().join("blocked.prom");
        std::fs::create_dir(&blocked).unwrap();
        assert!(write_textfile(&blocked, "a 2\n").is_err());
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["blocked.prom", "mailcanary.prom"]);
    }

    #[tokio::test]
    async fn push_errors_name_the_url_and_keep_the_cause() {
        let e = push("https://pgw:9091", "a", "").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "https://pgw:9091: only http:// Pushgateway URLs are supported"
        );
        let e = push("http://pgw:9091 x", "a", "").await.unwrap_err();
        assert!(matches!(e, PushError::BadUrl { .. }), "{e:?}");
        assert!(
            e.to_string().starts_with("http://pgw:9091 x/metrics/"),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());

        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = push(&format!("http://127.0.0.1:{port}"), "a", "")
            .await
            .unwrap_err();
        assert!(matches!(e, PushError::Connect { .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("cannot connect to 127.0.0.1:{port}"));
        let chain = crate::setup::chain(&e);
        assert!(
            chain.starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")),
            "{chain}"
        );
    }

    #[tokio::test]
    async fn a_refused_push_shows_the_status_and_the_first_line_of_the_answer() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let _ = conn.read(&mut buf).await;
            let body = "\npushed metrics are invalid or inconsistent\nsecond line\n";
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(answer.as_bytes()).await.unwrap();
        });
        let e = push(&format!("http://{addr}/"), "a", "x 1\n")
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "http://{addr}/metrics/job/mailcanary/instance/a answered 400 Bad Request: \
                 pushed metrics are invalid or inconsistent"
            )
        );
        assert!(std::error::Error::source(&e).is_none());
    }
}
