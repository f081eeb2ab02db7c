//! The stack's OAuth2 side (issue 13's real servers): a token-only user whose Bearer tokens
//! Dovecot checks at the stack's token endpoint, for IMAP, POP3 and SMTP submission (Postfix
//! through Dovecot SASL). What the agent will rely on, checked with plain clients first.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use async_imap::Client;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio_native_tls::TlsConnector;

use crate::support::*;

/// A POST to the stack's token endpoint (plain HTTP on loopback): status and body.
pub(crate) fn post(url: &str, form: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut stream = TcpStream::connect(host).expect("connect to the token endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().expect("an HTTP status");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// A token of `grant` from the stack's endpoint.
fn token(stack: &Stack, grant: &str) -> String {
    let mut form = format!(
        "grant_type={grant}&client_id={}&client_secret={}&scope={}",
        stack.get("MAILSTACK_OAUTH_CLIENT_ID"),
        stack.get("MAILSTACK_OAUTH_CLIENT_SECRET"),
        stack.get("MAILSTACK_OAUTH_SCOPE")
    );
    if grant == "refresh_token" {
        let file = stack.get("MAILSTACK_OAUTH_REFRESH_TOKEN_FILE");
        let refresh = std::fs::read_to_string(file).expect("the stack's refresh token");
        form.push_str(&format!("&refresh_token={}", refresh.trim()));
    }
    let (status, body) = post(stack.get("MAILSTACK_OAUTH_TOKEN_URL"), &form);
    assert_eq!(status, 200, "{body}");
    let start = body.find("\"access_token\": \"").expect("a token") + 17;
    body[start..].split('"').next().unwrap().to_string()
}

/// `user=U^Aauth=Bearer T^A^A` (XOAUTH2's initial response, before base64).
fn xoauth2(user: &str, token: &str) -> String {
    format!("user={user}\x01auth=Bearer {token}\x01\x01")
}

struct Once(String);

impl async_imap::Authenticator for Once {
    type Response = String;
    fn process(&mut self, _challenge: &[u8]) -> String {
        std::mem::take(&mut self.0)
    }
}

/// Whether IMAPS accepts `AUTHENTICATE mechanism` with `response`.
async fn imap_authenticates(stack: &Stack, mechanism: &str, response: String) -> bool {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", stack.port("MAILSTACK_IMAPS_PORT")))
        .await
        .unwrap();
    let ca = std::fs::read(stack.get("MAILSTACK_CA_FILE")).unwrap();
    let connector = native_tls::TlsConnector::builder()
        .add_root_certificate(native_tls::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let tls = TlsConnector::from(connector)
        .connect("localhost", tcp)
        .await
        .unwrap();
    let mut client = Client::new(tls);
    client.read_response().await.unwrap();
    match client.authenticate(mechanism, Once(response)).await {
        Ok(mut session) => {
            session
                .select("INBOX")
                .await
                .expect("the token-only user's INBOX");
            let _ = session.logout().await;
            true
        }
        Err(_) => false,
    }
}

/// Whether IMAPS accepts a password LOGIN.
async fn imap_login(stack: &Stack, user: &str, password: &str) -> bool {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", stack.port("MAILSTACK_IMAP_PORT")))
        .await
        .unwrap();
    let mut client = Client::new(tcp);
    client.read_response().await.unwrap();
    client.login(user, password).await.is_ok()
}

/// Whether plain POP3 accepts `AUTH XOAUTH2` with an initial response (loopback allows it).
fn pop3_authenticates(stack: &Stack, user: &str, token: &str) -> bool {
    use base64::Engine as _;
    let stream = TcpStream::connect(("127.0.0.1", stack.port("MAILSTACK_POP3_PORT"))).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let ir = base64::engine::general_purpose::STANDARD.encode(xoauth2(user, token));
    (&stream)
        .write_all(format!("AUTH XOAUTH2 {ir}\r\n").as_bytes())
        .unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    let _ = (&stream).write_all(b"QUIT\r\n");
    line.starts_with("+OK")
}

/// Logs in to submission with XOAUTH2 and sends one mail to `user`; the server's answer to AUTH.
async fn submit_with_token(stack: &Stack, user: &str, token: &str) -> Result<(), String> {
    let ca = std::fs::read(stack.get("MAILSTACK_CA_FILE")).unwrap();
    let params = TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(&ca).unwrap())
        .build_native()
        .unwrap();
    let hello = ClientId::Domain("it.example.test".into());
    let port = stack.port("MAILSTACK_SUBMISSION_PORT");
    let mut conn = AsyncSmtpConnection::connect_tokio1(
        ("127.0.0.1", port),
        Some(Duration::from_secs(10)),
        &hello,
        None,
        None,
    )
    .await
    .map_err(|e| e.to_string())?;
    conn.starttls(params, &hello)
        .await
        .map_err(|e| e.to_string())?;
    let creds = Credentials::new(user.to_string(), token.to_string());
    conn.auth(&[Mechanism::Xoauth2], &creds)
        .await
        .map_err(|e| e.to_string())?;
    let envelope =
        lettre::address::Envelope::new(Some(user.parse().unwrap()), vec![user.parse().unwrap()])
            .unwrap();
    let message = format!("From: {user}\r\nTo: {user}\r\nSubject: sent with a token\r\n\r\nhi\r\n");
    conn.send(&envelope, message.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let _ = conn.quit().await;
    Ok(())
}

#[test]
fn the_stack_checks_bearer_tokens_for_imap_pop3_and_submission() {
    let stack = Stack::shared();
    // It revokes every token at the end: not while another test uses one.
    let _idp = crate::tokens::take_idp(stack);
    let user = stack.get("MAILSTACK_OAUTH_USER").to_string();
    empty_mailbox(stack, &user);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = token(stack, "client_credentials");
        assert!(imap_authenticates(stack, "XOAUTH2", xoauth2(&user, &app)).await);
        let refreshed = token(stack, "refresh_token");
        let bearer =
            format!("n,a={user},\x01host=127.0.0.1\x01port=993\x01auth=Bearer {refreshed}\x01\x01");
        assert!(imap_authenticates(stack, "OAUTHBEARER", bearer).await);
        assert!(pop3_authenticates(stack, &user, &app));
        // Token-only: no password opens it, and a made-up token does not either.
        assert!(!imap_login(stack, &user, stack.get("MAILSTACK_TEST_PASSWORD")).await);
        assert!(!imap_authenticates(stack, "XOAUTH2", xoauth2(&user, "made-up")).await);
        // Submission takes the token through Dovecot SASL, and the user receives mail.
        submit_with_token(stack, &user, &app)
            .await
            .expect("submission with XOAUTH2");
        assert!(poll_until(Duration::from_secs(10), &mut || {
            mail_files(&stack.maildir(&user))
                .iter()
                .any(|(_, text)| text.contains("Subject: sent with a token"))
        }));
        // Revoked at the endpoint: refused everywhere from then on.
        let (status, _) = post(
            &format!("{}/revoke", stack.get("MAILSTACK_OAUTH_ADMIN_URL")),
            "",
        );
        assert_eq!(status, 200);
        assert!(!imap_authenticates(stack, "XOAUTH2", xoauth2(&user, &app)).await);
        assert!(!pop3_authenticates(stack, &user, &refreshed));
        assert!(submit_with_token(stack, &user, &app).await.is_err());
    });
    empty_mailbox(stack, &user);
}
