//! Logging in: `LOGIN` with a password, or `AUTHENTICATE` with an OAuth2 token (XOAUTH2 or
//! OAUTHBEARER), sent as an initial response (RFC 4959 SASL-IR) when the server offers it.

use async_imap::error::Error as ImapError;
use async_imap::{Authenticator, Client};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{ImapSession, Wire};
use crate::config::{Credentials, Endpoint, Login, SaslMechanism, Secret, TokenSource};
use crate::mailbox::tls;
use crate::mailbox::{MailboxError, MailboxStage};
use crate::oauth2;
use crate::transcript::Recorder;

/// Logs `client` in as `creds` within the endpoint's timeout (a token fetch has its own).
///
/// The login runs concealed from `recorder` ([`Recorder::conceal`]): whatever the client sends
/// meanwhile is recorded only as far as it is a login command with its secret replaced, the
/// rest (a password as a literal, a SASL response) as `<redacted>`.
pub(super) async fn log_in(
    client: Client<Wire>,
    creds: &Credentials,
    endpoint: &Endpoint,
    sasl_ir: bool,
    recorder: &Recorder,
) -> Result<ImapSession, MailboxError> {
    let _concealed = recorder.conceal();
    let user = &creds.username;
    let refused = |e: ImapError| {
        MailboxError::new(
            MailboxStage::Auth,
            format!("{endpoint}: login as {user} refused: {e}"),
        )
    };
    match &creds.login {
        Login::Password(password) => {
            let login = client.login(user, password.expose());
            match tokio::time::timeout(endpoint.timeout, login).await {
                Ok(Ok(session)) => Ok(session),
                Ok(Err((e, _))) => Err(refused(e)),
                Err(_) => Err(tls::timed_out(endpoint, "LOGIN", endpoint.timeout)),
            }
        }
        Login::Token { mechanism, source } => {
            with_token(client, creds, endpoint, (*mechanism, source), sasl_ir).await
        }
    }
}

/// `AUTHENTICATE` with a token; a refused token is renewed once before the refusal counts
/// (it may have been revoked or have expired early), on the same connection.
async fn with_token(
    mut client: Client<Wire>,
    creds: &Credentials,
    endpoint: &Endpoint,
    (mechanism, source): (SaslMechanism, &TokenSource),
    sasl_ir: bool,
) -> Result<ImapSession, MailboxError> {
    let user = &creds.username;
    let mut renewed = false;
    loop {
        let token = oauth2::access_token(source, endpoint.timeout)
            .await
            .map_err(|e| MailboxError::new(MailboxStage::Auth, e.to_string()))?;
        let response =
            oauth2::initial_response(mechanism, user, &endpoint.host, endpoint.port, &token);
        let command = match sasl_ir {
            true => format!("{mechanism} {}", BASE64.encode(response.expose())),
            false => mechanism.as_str().to_string(),
        };
        let authenticator = TokenResponse {
            response,
            sent: sasl_ir,
        };
        let attempt = client.authenticate(command, authenticator);
        match tokio::time::timeout(endpoint.timeout, attempt).await {
            Ok(Ok(session)) => return Ok(session),
            Ok(Err((ImapError::No(text), back))) if !renewed => {
                tracing::info!(
                    %endpoint, %user, %mechanism, answer = %text,
                    "token refused; fetching a new one and trying once more"
                );
                oauth2::renew(source, &token);
                renewed = true;
                client = back;
            }
            Ok(Err((e, _))) => {
                return Err(MailboxError::new(
                    MailboxStage::Auth,
                    format!("{endpoint}: AUTHENTICATE {mechanism} as {user} refused: {e}"),
                ));
            }
            Err(_) => return Err(tls::timed_out(endpoint, "AUTHENTICATE", endpoint.timeout)),
        }
    }
}

/// Answers the server's first (empty) challenge with the initial response, unless it went
/// with the command already; any later challenge is the server's error report for XOAUTH2 or
/// OAUTHBEARER, answered with an empty response so the server sends its final `NO`.
struct TokenResponse {
    response: Secret,
    sent: bool,
}

impl Authenticator for TokenResponse {
    type Response = Vec<u8>;

    fn process(&mut self, _challenge: &[u8]) -> Vec<u8> {
        if std::mem::replace(&mut self.sent, true) {
            Vec::new()
        } else {
            self.response.expose().as_bytes().to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::time::Duration;

    use super::*;
    use crate::config::TlsMode;
    use crate::mailbox::tls::MailStream;
    use crate::transcript::Recorded;

    /// A scripted IMAP server on loopback for one connection: greets with `greeting`, then
    /// answers each client line with the next of `answers` (`{tag}` is the client's tag).
    /// Returns the port and, when the script ends, the client lines it read.
    fn server(
        greeting: &'static str,
        answers: Vec<&'static str>,
    ) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            stream.write_all(greeting.as_bytes()).unwrap();
            let (mut lines, mut tag) = (Vec::new(), String::new());
            for answer in answers {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end().to_string();
                if let Some((t, rest)) = line.split_once(' ')
                    && (rest.starts_with("AUTHENTICATE") || rest.starts_with("LOGIN"))
                {
                    tag = t.to_string();
                }
                lines.push(line);
                stream
                    .write_all(answer.replace("{tag}", &tag).as_bytes())
                    .unwrap();
            }
            lines
        });
        (port, script)
    }

    /// A token command that hands out `tok1`, `tok2`, … (counting in `dir`).
    fn counting_tokens(dir: &std::path::Path) -> TokenSource {
        let counter = dir.join("n");
        let script = format!(
            "n=$(cat {0} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {0}; echo tok$n",
            counter.display()
        );
        TokenSource::Command(vec!["/bin/sh".into(), "-c".into(), script])
    }

    async fn log_in_to(port: u16, source: TokenSource) -> Result<ImapSession, MailboxError> {
        let creds = Credentials {
            username: "u@example.test".into(),
            login: Login::Token {
                mechanism: SaslMechanism::Xoauth2,
                source,
            },
        };
        log_in_as(port, &creds, &Recorder::default()).await
    }

    async fn log_in_as(
        port: u16,
        creds: &Credentials,
        recorder: &Recorder,
    ) -> Result<ImapSession, MailboxError> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let stream = Recorded::new(MailStream::Plain(tcp), recorder.clone());
        let mut client = Client::new(stream);
        let greeting = client.read_response().await.unwrap().unwrap();
        let sasl_ir = format!("{:?}", greeting.parsed()).contains("SASL-IR");
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port,
            tls: TlsMode::None,
            tls_verify: true,
            ca_file: None,
            timeout: Duration::from_secs(5),
        };
        log_in(client, creds, &endpoint, sasl_ir, recorder).await
    }

    #[tokio::test]
    async fn a_refused_login_is_recorded_with_the_servers_answer_and_without_the_password() {
        let no = "{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n";
        let (port, script) = server("* OK [CAPABILITY IMAP4rev1] ready\r\n", vec![no]);
        let creds = Credentials {
            username: "u@example.test".into(),
            login: Login::Password(Secret::new("pa55-w0rd".to_string())),
        };
        let recorder = Recorder::default();
        let e = log_in_as(port, &creds, &recorder).await.unwrap_err();
        assert_eq!(e.stage, MailboxStage::Auth);
        assert!(
            script.join().unwrap()[0].contains("pa55-w0rd"),
            "it was sent"
        );
        let lines = recorder.take();
        assert_eq!(lines[0], "S: * OK [CAPABILITY IMAP4rev1] ready");
        assert!(
            lines[1].ends_with(" LOGIN \"u@example.test\" <redacted>"),
            "{lines:?}"
        );
        assert!(lines[2].ends_with(" NO [AUTHENTICATIONFAILED] Authentication failed."));
        assert!(!lines.concat().contains("pa55-w0rd"), "{lines:?}");
    }

    fn decoded(line: &str) -> String {
        let b64 = line.rsplit(' ').next().unwrap();
        String::from_utf8(BASE64.decode(b64).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn without_sasl_ir_the_token_answers_the_first_challenge() {
        let dir = tempfile::tempdir().unwrap();
        let (port, script) = server("* OK ready\r\n", vec!["+ \r\n", "{tag} OK in\r\n"]);
        log_in_to(port, counting_tokens(dir.path())).await.unwrap();
        let lines = script.join().unwrap();
        assert!(lines[0].ends_with(" AUTHENTICATE XOAUTH2"), "{lines:?}");
        assert_eq!(
            decoded(&lines[1]),
            "user=u@example.test\x01auth=Bearer tok1\x01\x01"
        );
    }

    #[tokio::test]
    async fn a_refused_token_is_renewed_once_on_the_same_connection_with_sasl_ir() {
        let dir = tempfile::tempdir().unwrap();
        let greeting = "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] ready\r\n";
        let refusal = "+ eyJzdGF0dXMiOiI0MDEifQ==\r\n";
        let answers = vec![
            refusal,
            "{tag} NO [AUTHENTICATIONFAILED] bad token\r\n",
            "{tag} OK in\r\n",
        ];
        let (port, script) = server(greeting, answers);
        log_in_to(port, counting_tokens(dir.path())).await.unwrap();
        let lines = script.join().unwrap();
        assert!(lines[0].contains(" AUTHENTICATE XOAUTH2 "), "{lines:?}");
        assert!(decoded(&lines[0]).contains("auth=Bearer tok1"));
        assert_eq!(
            lines[1], "",
            "the error challenge is answered with an empty response"
        );
        assert!(
            decoded(&lines[2]).contains("auth=Bearer tok2"),
            "a new token: {lines:?}"
        );
    }

    #[tokio::test]
    async fn a_second_refusal_is_an_auth_failure() {
        let dir = tempfile::tempdir().unwrap();
        let greeting = "* OK [CAPABILITY IMAP4rev1 SASL-IR] ready\r\n";
        let no = "{tag} NO [AUTHENTICATIONFAILED] bad token\r\n";
        let (port, script) = server(greeting, vec![no, no]);
        let e = log_in_to(port, counting_tokens(dir.path()))
            .await
            .unwrap_err();
        assert_eq!(e.stage, MailboxStage::Auth);
        assert!(
            e.message
                .contains("AUTHENTICATE XOAUTH2 as u@example.test refused"),
            "{e}"
        );
        assert!(
            !e.message.contains("tok1") && !e.message.contains("tok2"),
            "{e}"
        );
        assert_eq!(script.join().unwrap().len(), 2, "exactly one renewal");
    }
}
