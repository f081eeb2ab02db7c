use super::*;

#[test]
fn delay_is_signed() {
    assert_eq!(delivery_delay(1_000, 3_500), 2.5);
    assert_eq!(delivery_delay(3_500, 1_000), -2.5);
    assert_eq!(delivery_delay(u64::MAX, 0), -(u64::MAX as f64) / 1000.0);
}

#[test]
fn oldest_age_uses_the_oldest_canary() {
    assert_eq!(oldest_age([], 10_000), 0.0);
    assert_eq!(oldest_age([9_000, 4_000, 8_000], 10_000), 6.0);
    assert_eq!(oldest_age([12_000], 10_000), 0.0);
}

/// 2026-11-28 14:26:29 UTC.
const T0: u64 = 1_795_875_989_000;

fn dates(head: &str) -> Vec<Option<u64>> {
    received_chain(head.replace('\n', "\r\n").as_bytes())
        .into_iter()
        .map(|h| h.date_ms)
        .collect()
}

#[test]
fn postfix_and_dovecot_lmtp_chain_is_oldest_first() {
    let head = "Return-Path: <probe1@example.test>\n\
Delivered-To: box13@example.test\n\
Received: from mx.example.test\n\
\tby mx.example.test with LMTP\n\
\tid EO+GH5XkCmuVNwAAg+zDdQ\n\
\t(envelope-from <probe1@example.test>)\n\
\tfor <box13@example.test>; Sat, 28 Nov 2026 14:26:32 +0000\n\
Received: from vm (unknown [127.0.0.1])\n\
\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n\
\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\n\
\t(No client certificate requested)\n\
\tby mx.example.test (Postfix) with ESMTPSA id 70E6498C1EF\n\
\tfor <box13@example.test>; Sat, 28 Nov 2026 14:26:29 +0000 (UTC)\n\
Subject: hi\n\n";
    let chain = received_chain(head.replace('\n', "\r\n").as_bytes());
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0].date_ms, Some(T0), "Postfix's hop is the oldest");
    assert_eq!(chain[1].date_ms, Some(T0 + 3_000));
    assert_eq!(chain[0].by.as_deref(), Some("mx.example.test"));
}

#[test]
fn exim_exchange_and_gmail_formats() {
    let exim = "Received: from [192.0.2.7] (helo=client.example.org)\n\
\tby mail.example.net with esmtpsa  (TLS1.3) tls TLS_AES_256_GCM_SHA384\n\
\t(Exim 4.96)\n\
\t(envelope-from <a@example.org>)\n\
\tid 1tGxyz-000ABC-2Q\n\
\tfor b@example.net;\n\
\tSat, 28 Nov 2026 15:26:29 +0100\n\n";
    assert_eq!(dates(exim), vec![Some(T0)]);

    let exchange = "Received: from AM0PR01MB1234.eurprd01.prod.exchangelabs.com\n\
\x20(2603:10a6:208:1::12) by AM0PR01MB5678.eurprd01.prod.exchangelabs.com\n\
\x20(2603:10a6:208:2::34) with Microsoft SMTP Server (version=TLS1_2,\n\
\x20cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.20.7000.20; Sat, 28 Nov\n\
\x202026 14:26:31 +0000\n\
Received: from mail.example.org (192.0.2.7) by\n\
\x20AM0PR01MB1234.mail.protection.outlook.com (10.1.1.1) with Microsoft SMTP\n\
\x20Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id\n\
\x2015.20.7000.20 via Frontend Transport; Sat, 28 Nov 2026 14:26:30 +0000\n\n";
    assert_eq!(dates(exchange), vec![Some(T0 + 1_000), Some(T0 + 2_000)]);

    let gmail = "Received: by 2002:a05:6402:1234:b0:5c8:abcd:ef01 with SMTP id x1csp123456edb;\n\
\x20Sat, 28 Nov 2026 06:26:33 -0800 (PST)\n\
Received: from mail-sor-f41.google.com (mail-sor-f41.google.com. [209.85.220.41])\n\
\x20by mx.google.com with SMTPS id a1sor123456ejb.12.2026.11.28.06.26.29\n\
\x20for <b@gmail.com>\n\
\x20(Google Transport Security);\n\
\x20Sat, 28 Nov 2026 06:26:29 -0800 (PST)\n\n";
    assert_eq!(dates(gmail), vec![Some(T0), Some(T0 + 4_000)]);
}

#[test]
fn odd_and_missing_dates_are_kept_as_unknown_hops() {
    let head = "Received: by relay.example.net (no date at all)\n\
Received: from a by b; 28 Nov 2026 14:26:29 GMT\n\
Received: from c by d; Sat, 28 Nov 26 14:26:29 +0000\n\
Received: from e by f; Sat, 28 Nov 2026 14:26:29 -0000\n\n";
    let d = dates(head);
    assert_eq!(d.len(), 4);
    assert_eq!(d[3], None, "the newest line has no date");
    assert_eq!(d[2], Some(T0), "no weekday, GMT zone");
    assert_eq!(d[0], Some(T0), "-0000 zone");
    let qmail = "Received: (qmail 12345 invoked by uid 89); 28 Nov 2026 14:26:29 -0000\n\n";
    assert_eq!(dates(qmail), vec![Some(T0)], "qmail's own format");
    assert_eq!(
        received_chain(b"Subject: no received lines\r\n\r\n"),
        Vec::new()
    );
    assert_eq!(received_chain(b""), Vec::new());
}

fn hop(date_ms: u64) -> Hop {
    Hop {
        by: None,
        date_ms: Some(date_ms),
    }
}

#[test]
fn breakdown_with_a_delaying_middle_hop_and_internaldate() {
    let sent = T0 - 200;
    let chain = [hop(T0), hop(T0 + 3_000)];
    let b = breakdown(sent, &chain, Some(T0 + 3_000));
    assert_eq!(
        b.hops,
        vec![0.7, 3.0, 0.0],
        "stamps are read as the middle of their second"
    );
    assert_eq!(b.server_delay_s, Some(3.7));
    assert_eq!(b.clock_skew_s, Some(0.7));
}

#[test]
fn without_internaldate_the_newest_received_is_the_server_time() {
    let b = breakdown(T0, &[hop(T0), hop(T0 + 5_000)], None);
    assert_eq!(b.server_delay_s, Some(5.5));
    assert_eq!(b.hops, vec![0.5, 5.0]);
    let none = breakdown(T0, &[], None);
    assert_eq!(
        (none.server_delay_s, none.hops.len(), none.clock_skew_s),
        (None, 0, None)
    );
}

#[test]
fn impossible_hop_times_are_reported_not_clamped() {
    // The first server's clock is 30 s behind the sender's.
    let b = breakdown(T0 + 30_000, &[hop(T0), hop(T0 + 1_000)], None);
    assert_eq!(b.hops, vec![-29.5, 1.0]);
    assert_eq!(b.server_delay_s, Some(-28.5));
    assert_eq!(b.clock_skew_s, Some(-29.5));
}

#[test]
fn hops_beyond_the_label_bound_fold_into_the_last_label() {
    let short = [1.0, 2.0, 3.0];
    assert_eq!(fold_hops(&short, HOP_LABELS), short);
    let exact: Vec<f64> = (0..HOP_LABELS).map(|i| i as f64).collect();
    assert_eq!(fold_hops(&exact, HOP_LABELS), exact);
    let long: Vec<f64> = vec![1.0; 200];
    let folded = fold_hops(&long, HOP_LABELS);
    assert_eq!(folded.len(), HOP_LABELS);
    assert_eq!(folded[..HOP_LABELS - 1], [1.0; HOP_LABELS - 1]);
    assert_eq!(
        folded[HOP_LABELS - 1],
        (200 - (HOP_LABELS - 1)) as f64,
        "the deeper hops are summed, so the total is kept"
    );
    assert_eq!(folded.iter().sum::<f64>(), 200.0);
    assert!(fold_hops(&long, 0).is_empty());
}

#[test]
fn a_chain_of_200_received_lines_breaks_down_into_bounded_hops() {
    let line = "Received: from relay.example.test by relay.example.test; Sat, 28 Nov 2026 14:26:30 +0000\n";
    let head = format!("{}Subject: x\n\n", line.repeat(200));
    let chain = received_chain(head.replace('\n', "\r\n").as_bytes());
    assert_eq!(chain.len(), 200);
    let hops = breakdown(T0, &chain, None).hops;
    assert_eq!(hops.len(), 200, "the breakdown keeps every hop for the log");
    assert_eq!(fold_hops(&hops, HOP_LABELS).len(), HOP_LABELS);
}
