//! Judging canary headers and the summary's attention rule.

use super::*;

fn key() -> SigningKey {
    SigningKey::new(b"k".to_vec()).unwrap()
}

fn header(agent: &str, probe: &str, key: &SigningKey) -> String {
    crate::testing::canary_header(agent, probe, key)
}

#[test]
fn a_probe_needs_attention_after_a_loss_a_failed_send_or_with_its_mailbox_down() {
    let before = Summary {
        sent: 10,
        delivered: 9,
        lost: 1,
        send_failures: 2,
        in_flight: 1,
        last_delay_s: Some(3.0),
        mailbox_up: true,
    };
    let healthy = Summary {
        sent: 20,
        delivered: 19,
        in_flight: 0,
        ..before
    };
    assert!(!healthy.needs_attention(&before), "old trouble is not news");
    for troubled in [
        Summary { lost: 2, ..healthy },
        Summary {
            send_failures: 3,
            ..healthy
        },
        Summary {
            mailbox_up: false,
            ..healthy
        },
    ] {
        assert!(troubled.needs_attention(&before), "{troubled:?}");
    }
}

#[test]
fn judgement_separates_ours_forged_and_foreign() {
    let k = key();
    let other = SigningKey::new(b"other".to_vec()).unwrap();
    assert!(matches!(judge(&header("a", "p", &k), &k, "a", "p"), Verdict::Ours(c) if c.seq == 1));
    assert_eq!(
        judge(&header("a", "p", &other), &k, "a", "p"),
        Verdict::Forged {
            claimed_class: "bulk".into()
        }
    );
    assert_eq!(
        judge(&header("b", "p", &other), &k, "a", "p"),
        Verdict::NotOurs
    );
    assert_eq!(judge(&header("a", "q", &k), &k, "a", "p"), Verdict::NotOurs);
    assert_eq!(judge("v=1; garbage", &k, "a", "p"), Verdict::NotOurs);
}
