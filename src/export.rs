//! Writing rendered metrics where cron-mode collectors pick them up: a node_exporter textfile
//! or a Pushgateway.

use std::io::Write as _;
use std::path::Path;
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
pub fn write_textfile(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} names no file", path.display())))?;
    // node_exporter only reads `*.prom`, so the temporary name must not end in `.prom`.
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
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

/// Replaces this agent's group on a Pushgateway: `PUT <base>/metrics/job/mailcanary/instance/<agent>`.
///
/// PUT, not POST, so series that disappeared from the agent disappear from the group too.
pub async fn push(base: &str, agent: &str, text: &str) -> Result<(), String> {
    let url = format!(
        "{}/metrics/job/mailcanary/instance/{agent}",
        base.trim_end_matches('/')
    );
    let uri: Uri = url.parse().map_err(|e| format!("invalid URL {url}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "{base}: only http:// Pushgateway URLs are supported"
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{base}: no host"))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let exchange = async {
        let stream = TcpStream::connect((authority.host(), port))
            .await
            .map_err(|e| format!("connect to {authority}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request = Request::put(uri.path())
            .header(HOST, authority.as_str())
            .header(CONTENT_TYPE, METRICS_CONTENT_TYPE)
            .body(Full::new(Bytes::from(text.to_string())))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
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
        Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body).trim()
        ))
    };
    tokio::time::timeout(PUSH_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {PUSH_TIMEOUT:?}")))
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
}
