//! The HTTP endpoints under attack (issue 10): a flood of wrong basic-auth passwords and
//! unknown users must not starve a real Prometheus scraping with the right ones.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use crate::support::*;

/// One GET of `/metrics` with basic auth, on a fresh connection; the status, or 0 when no
/// HTTP answer came within 5 s.
fn get_with_auth(port: u16, user: &str, password: &str) -> u16 {
    let attempt = || -> std::io::Result<u16> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let credentials = STANDARD.encode(format!("{user}:{password}"));
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {credentials}\r\n\
             Connection: close\r\n\r\n"
        )?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        Ok(String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0))
    };
    attempt().unwrap_or(0)
}

/// Sends `rate` requests per second for `duration`, each on its own connection and thread, so
/// a slow server does not slow the flood down. Every fifth is from an unknown user, the others
/// are the right user with a wrong password (all different: nothing to cache). Returns the
/// statuses of the wrong passwords and of the unknown users.
fn flood(port: u16, rate: u32, duration: Duration) -> (Vec<u16>, Vec<u16>) {
    let start = Instant::now();
    let mut threads = Vec::new();
    let mut n = 0u32;
    while start.elapsed() < duration {
        let unknown = n % 5 == 4;
        threads.push((
            unknown,
            std::thread::spawn(move || {
                if unknown {
                    get_with_auth(port, &format!("intruder{n}"), "scrape-pass")
                } else {
                    get_with_auth(port, "prometheus", &format!("guess-{n}"))
                }
            }),
        ));
        n += 1;
        let next = start + Duration::from_secs(1) * n / rate;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
    for (is_unknown, thread) in threads {
        let status = thread.join().expect("a flood thread");
        if is_unknown {
            unknown.push(status);
        } else {
            wrong.push(status);
        }
    }
    (wrong, unknown)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// The raw `up` samples of the agent's job in the last `seconds`, as (timestamp, value).
fn up_samples(prometheus: u16, seconds: u64) -> Vec<(f64, f64)> {
    let path = format!("/api/v1/query?query=up%7Bjob%3D%22mailcanary%22%7D%5B{seconds}s%5D");
    let Some((200, body)) = http_get(prometheus, &path) else {
        return Vec::new();
    };
    let answer: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    answer["data"]["result"]
        .as_array()
        .and_then(|series| series.first())
        .and_then(|s| s["values"].as_array())
        .map(|values| {
            values
                .iter()
                .filter_map(|v| {
                    let value = v[1].as_str()?.parse().ok()?;
                    Some((v[0].as_f64()?, value))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn prometheus_keeps_scraping_through_a_flood_of_wrong_passwords() {
    let stack = Stack::shared();
    // The mailbox is incidental here (nothing about delivery is asserted), so this test shares
    // box26 with `shutdown` without emptying it: each agent only ever touches its own canaries.
    let user = "box26@example.test";
    let work = Workdir::new(
        "it-web-flood",
        &with_probe_keys(
            &probe_section(stack, "flooded", user, "MC_PROBE1_PASSWORD"),
            "classes = [\"interpersonal\"]",
        ),
    );
    let dir = work.dir.path();
    // A realistic cost: every wrong password costs real hashing.
    let hash = bcrypt::hash("scrape-pass", 8).unwrap();
    let web = dir.join("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n  prometheus: {hash}\n")).unwrap();
    let port = free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: mailcanary\n    basic_auth:\n      username: prometheus\n\
             \x20     password: scrape-pass\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let prometheus = Service::start(
        "prometheus",
        &[
            &format!("--config.file={}", dir.join("prometheus.yml").display()),
            &format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
        ],
    );
    let agent = work.spawn_daemon(stack, port, &["--web.config.file", web.to_str().unwrap()]);
    // Once one scrape got in, its credentials are verified and cached.
    agent.wait_for("a successful scrape", Duration::from_secs(30), || {
        up_samples(prometheus.port, 30)
            .iter()
            .any(|&(_, v)| v == 1.0)
    });

    let start = unix_now();
    let (wrong, unknown) = flood(port, 50, Duration::from_secs(10));
    let end = unix_now();
    // The scrape that started last in the window has been recorded once a later one is.
    agent.wait_for("a scrape after the flood", Duration::from_secs(10), || {
        up_samples(prometheus.port, 5).iter().any(|&(t, _)| t > end)
    });

    let window: Vec<(f64, f64)> = up_samples(prometheus.port, (unix_now() - start) as u64 + 2)
        .into_iter()
        .filter(|&(t, _)| t >= start && t <= end)
        .collect();
    assert!(window.len() >= 5, "Prometheus kept scraping: {window:?}");
    assert!(
        window.iter().all(|&(_, v)| v == 1.0),
        "every scrape during the flood succeeded: {window:?}\nlog:\n{}",
        agent.log_text()
    );
    eprintln!("flood statuses: wrong passwords {wrong:?}\nunknown users {unknown:?}");
    for (what, statuses) in [("wrong passwords", &wrong), ("unknown users", &unknown)] {
        assert!(statuses.contains(&401), "{what} got 401s: {statuses:?}");
        assert!(
            statuses.iter().all(|&s| s == 401 || s == 503),
            "{what} got only 401 or 503: {statuses:?}"
        );
    }
}
