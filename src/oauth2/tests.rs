use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::*;
use crate::config::{Grant, OAuth2Source};

/// A scripted token endpoint on loopback: answers every request with `status` and `body`
/// (or never, when `status` is 0), and keeps the forms it was sent.
struct FakeEndpoint {
    url: String,
    requests: Arc<AtomicUsize>,
    forms: Arc<Mutex<Vec<String>>>,
}

async fn fake_endpoint(status: u16, body: &'static str) -> FakeEndpoint {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let forms = Arc::new(Mutex::new(Vec::new()));
    let (count, kept) = (Arc::clone(&requests), Arc::clone(&forms));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (count, kept) = (Arc::clone(&count), Arc::clone(&kept));
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let form = loop {
                    let Ok(n) = conn.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen).to_string();
                    if let Some((head, form)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if form.len() >= length {
                            break form.to_string();
                        }
                    }
                };
                count.fetch_add(1, Ordering::SeqCst);
                kept.lock().unwrap().push(form);
                if status == 0 {
                    std::future::pending::<()>().await;
                }
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    FakeEndpoint {
        url,
        requests,
        forms,
    }
}

fn client_credentials(url: &str) -> TokenSource {
    TokenSource::OAuth2(OAuth2Source {
        token_url: url.to_string(),
        client_id: "app".into(),
        client_secret: Some(Secret::new("s3cret")),
        scope: Some("mail".into()),
        grant: Grant::ClientCredentials,
    })
}

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_token_is_fetched_once_and_shared_by_concurrent_logins() {
    let idp = fake_endpoint(
        200,
        r#"{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}"#,
    )
    .await;
    let source = client_credentials(&idp.url);
    let tokens = futures::future::join_all((0..20).map(|_| access_token(&source, TIMEOUT))).await;
    for t in tokens {
        assert_eq!(t.unwrap().expose(), "tok-1");
    }
    assert_eq!(idp.requests.load(Ordering::SeqCst), 1);
    let form = idp.forms.lock().unwrap()[0].clone();
    assert!(
        form.starts_with("grant_type=client_credentials&client_id=app&client_secret=s3cret"),
        "{form}"
    );
}

#[tokio::test]
async fn a_refused_token_is_renewed_once_and_a_replaced_one_is_kept() {
    let idp = fake_endpoint(200, r#"{"access_token":"tok-2","expires_in":3600}"#).await;
    let source = client_credentials(&idp.url);
    let first = access_token(&source, TIMEOUT).await.unwrap();
    renew(&source, &AccessToken(Secret::new("some-older-token")));
    access_token(&source, TIMEOUT).await.unwrap();
    assert_eq!(
        idp.requests.load(Ordering::SeqCst),
        1,
        "another token's refusal changes nothing"
    );
    renew(&source, &first);
    access_token(&source, TIMEOUT).await.unwrap();
    assert_eq!(idp.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_failing_endpoint_is_named_with_its_status_and_not_asked_again_at_once() {
    let idp = fake_endpoint(
        401,
        r#"{"error":"invalid_client","error_description":"bad secret"}"#,
    )
    .await;
    let source = client_credentials(&idp.url);
    let e = access_token(&source, TIMEOUT).await.unwrap_err();
    assert!(e.message.contains(&idp.url), "{e}");
    assert!(
        e.message.contains("HTTP 401") && e.message.contains("invalid_client (bad secret)"),
        "{e}"
    );
    assert!(!e.message.contains("s3cret"));
    let again = access_token(&source, TIMEOUT).await.unwrap_err();
    assert_eq!(again.message, e.message);
    assert_eq!(idp.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_endpoint_that_never_answers_is_a_timeout_not_a_hang() {
    let idp = fake_endpoint(0, "").await;
    let source = client_credentials(&idp.url);
    let e = access_token(&source, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(e.message.contains("no token within 300ms"), "{e}");
}

#[tokio::test]
async fn tokens_that_could_inject_protocol_lines_are_refused() {
    let idp = fake_endpoint(
        200,
        "{\"access_token\":\"tok\\r\\nA1 LOGOUT\",\"expires_in\":60}",
    )
    .await;
    let e = access_token(&client_credentials(&idp.url), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        e.message.contains("characters a bearer token cannot have"),
        "{e}"
    );
    assert!(is_b64token("ya29.a0Af-_~+/x=="));
    assert!(!is_b64token("") && !is_b64token("a b") && !is_b64token("=="));
}

fn refresh_source(url: &str, file: PathBuf) -> TokenSource {
    TokenSource::OAuth2(OAuth2Source {
        token_url: url.to_string(),
        client_id: "app".into(),
        client_secret: None,
        scope: None,
        grant: Grant::RefreshToken { file },
    })
}

#[tokio::test]
async fn a_rotated_refresh_token_replaces_the_stored_one_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("refresh-token");
    std::fs::write(&file, "old-refresh\n").unwrap();
    let idp = fake_endpoint(
        200,
        r#"{"access_token":"tok-3","expires_in":3600,"refresh_token":"new-refresh"}"#,
    )
    .await;
    let token = access_token(&refresh_source(&idp.url, file.clone()), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(token.expose(), "tok-3");
    assert!(idp.forms.lock().unwrap()[0].contains("refresh_token=old-refresh"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "new-refresh\n");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn tokens_are_used_until_a_tenth_of_their_life_before_expiry_at_most_five_minutes() {
    assert_eq!(
        fresh_for(Some(Duration::from_secs(10))),
        Duration::from_secs(9)
    );
    assert_eq!(
        fresh_for(Some(Duration::from_secs(3600))),
        Duration::from_secs(3300)
    );
    assert_eq!(
        fresh_for(Some(Duration::from_secs(86_400))),
        Duration::from_secs(86_100)
    );
    assert_eq!(fresh_for(None), UNANNOUNCED_LIFETIME);
}

#[tokio::test(start_paused = true)]
async fn a_cached_token_expires_and_a_held_failure_is_forgotten_after_its_time() {
    let slot = Slot::default();
    let token = AccessToken(Secret::new("t"));
    slot.held().token = Some((token.clone(), Instant::now() + Duration::from_secs(9)));
    assert_eq!(slot.answer().unwrap().unwrap(), token);
    tokio::time::advance(Duration::from_secs(9)).await;
    assert!(slot.answer().is_none(), "expired");
    slot.held().failed = Some((
        TokenError {
            message: "down".into(),
        },
        Instant::now(),
    ));
    assert!(slot.answer().unwrap().is_err());
    tokio::time::advance(FAILURE_HELD).await;
    assert!(slot.answer().is_none(), "asked again after FAILURE_HELD");
}

fn command(script: &str) -> TokenSource {
    TokenSource::Command(vec!["/bin/sh".into(), "-c".into(), script.into()])
}

#[tokio::test]
async fn a_token_command_prints_the_token_and_its_failures_are_explained() {
    let ok = access_token(&command("echo '  tok-cmd  '"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(ok.expose(), "tok-cmd");
    let failed = access_token(&command("echo 'no session' >&2; exit 3"), TIMEOUT)
        .await
        .unwrap_err();
    assert!(failed.message.contains("token command /bin/sh"), "{failed}");
    assert!(
        failed.message.contains("exit status: 3") && failed.message.contains(": no session"),
        "{failed}"
    );
    let slow = access_token(&command("sleep 30"), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(slow.message.contains("no token within"), "{slow}");
    let missing = TokenSource::Command(vec!["/nonexistent/get-token".into()]);
    let e = access_token(&missing, TIMEOUT).await.unwrap_err();
    assert!(
        e.message.contains("cannot run /nonexistent/get-token"),
        "{e}"
    );
}

#[test]
fn initial_responses_follow_the_mechanisms_formats() {
    let token = AccessToken(Secret::new("tok"));
    let x = initial_response(SaslMechanism::Xoauth2, "a@b", "h", 993, &token);
    assert_eq!(x.expose(), "user=a@b\x01auth=Bearer tok\x01\x01");
    let o = initial_response(SaslMechanism::OAuthBearer, "a=,b@c", "mx", 587, &token);
    assert_eq!(
        o.expose(),
        "n,a=a=3D=2Cb@c,\x01host=mx\x01port=587\x01auth=Bearer tok\x01\x01"
    );
}
