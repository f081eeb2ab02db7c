use super::*;
use crate::canary::{find_header, parse_header};
use mail_parser::{MessageParser, MimeHeaders as _};

fn canary(class: &str) -> Canary {
    Canary {
        id: "01JDQ8ZK3V6R9X1T2Y3Z4A5B6C".into(),
        probe: "p1".into(),
        class: class.into(),
        seq: 7,
        sent_ms: 1_795_000_000_000,
        agent: "agent-1".into(),
    }
}

fn key() -> SigningKey {
    SigningKey::new(b"k".to_vec()).unwrap()
}

const ENV: Envelope<'static> = Envelope {
    from: "probe1@example.test",
    to: "probe2@example.test",
};

fn rendered(spec: &ClassSpec) -> Vec<u8> {
    render(spec, &canary(&spec.name), &key(), &ENV)
}

fn builtin(name: &str) -> ClassSpec {
    ClassSpec::builtin(name, Template::by_name(name).unwrap())
}

/// The message parses, names the canary in header and body, and the signature verifies.
fn assert_valid_canary(raw: &[u8], class: &str) -> mail_parser::Message<'static> {
    let msg = MessageParser::default()
        .parse(raw)
        .expect(class)
        .into_owned();
    assert!(msg.subject().is_some(), "{class}: subject");
    assert!(
        msg.from().is_some() && msg.to().is_some() && msg.date().is_some(),
        "{class}"
    );
    assert!(msg.message_id().is_some(), "{class}: message id");
    let value = find_header(raw).expect(class);
    let claimed = parse_header(&value).expect(class);
    assert_eq!(
        claimed.verify(&key()).unwrap(),
        &canary(class),
        "{class}: signature"
    );
    let text = msg.body_text(0).expect(class);
    assert!(
        text.contains("mailcanary-id: 01JDQ8ZK3V6R9X1T2Y3Z4A5B6C"),
        "{class}: token"
    );
    let as_text = String::from_utf8_lossy(raw);
    assert!(
        !as_text.replace("\r\n", "").contains('\n'),
        "{class}: bare LF"
    );
    assert!(
        as_text.lines().all(|l| l.len() <= 998),
        "{class}: line over 998"
    );
    msg
}

#[test]
fn every_template_parses_and_keeps_a_valid_signature() {
    for (name, _) in Template::ALL {
        assert_valid_canary(&rendered(&builtin(name)), name);
    }
}

#[test]
fn templates_carry_their_class_markers() {
    let personal = assert_valid_canary(&rendered(&builtin("interpersonal")), "interpersonal");
    assert!(personal.header("List-Unsubscribe").is_none());
    assert!(personal.header("Auto-Submitted").is_none());
    assert!(personal.header("Precedence").is_none());
    let ctype = personal.content_type().unwrap();
    assert_eq!((ctype.ctype(), ctype.subtype()), ("text", Some("plain")));

    let receipt = assert_valid_canary(&rendered(&builtin("transactional")), "transactional");
    assert_eq!(
        receipt.header("Auto-Submitted").unwrap().as_text(),
        Some("auto-generated")
    );
    assert!(receipt.subject().unwrap().contains("receipt"));
    assert_eq!(
        (receipt.text_body_count(), receipt.html_body_count()),
        (1, 1)
    );
    assert_eq!(
        receipt.content_type().unwrap().subtype(),
        Some("alternative")
    );

    let news = assert_valid_canary(&rendered(&builtin("bulk")), "bulk");
    assert_eq!(news.header("Precedence").unwrap().as_text(), Some("bulk"));
    assert!(news.header("List-Id").is_none(), "a newsletter, not a list");
    assert!(news.header("List-Unsubscribe").is_some());
    assert_eq!(
        news.header("List-Unsubscribe-Post").unwrap().as_text(),
        Some("List-Unsubscribe=One-Click")
    );
    let html = news.body_html(0).unwrap();
    let text = news.body_text(0).unwrap();
    assert!(html.len() > 3 * text.len(), "bulk is HTML-heavy");
}

/// What makes filters score the newsletter above personal mail (see body.rs): an HTML part of
/// 1.2 to 2.8 KB with images and a stylesheet link, a text part sharing no word with it, and an
/// odd number of links.
#[test]
fn bulk_keeps_the_shape_filters_score_as_a_newsletter() {
    let raw = rendered(&builtin("bulk"));
    let news = assert_valid_canary(&raw, "bulk");
    let html = news.body_html(0).unwrap();
    let text = news.body_text(0).unwrap();
    assert!(
        (1200..2800).contains(&html.len()),
        "html is {} bytes",
        html.len()
    );
    assert!(html.contains("<img src=\"https://example.test/img/"));
    assert!(html.contains("<link rel=\"stylesheet\" href=\"https://example.test/"));
    assert!(html.contains(">View in browser</a>") && html.contains(">Unsubscribe</a>"));
    let visible: String = html
        .split('<')
        .filter_map(|tag| tag.split_once('>').map(|(_, after)| after))
        .collect::<Vec<_>>()
        .join(" ");
    let html_words: Vec<&str> = visible.split_whitespace().collect();
    for word in text.split_whitespace() {
        assert!(!html_words.contains(&word), "text and HTML share {word:?}");
    }
    let links = String::from_utf8_lossy(&raw).matches("href=\"https://").count()
        - 1 // the stylesheet
        + text.matches("https://").count();
    assert_eq!(links % 2, 1, "{links} links");
}

#[test]
fn custom_headers_override_or_add_and_the_subject_can_change() {
    let spec = ClassSpec {
        name: "spammy".into(),
        template: Template::Bulk,
        headers: vec![
            ("precedence".into(), "list".into()),
            ("X-Spam-Flag".into(), "YES".into()),
        ],
        subject: Some("Win a prize".into()),
        size: None,
    };
    let raw = rendered(&spec);
    let msg = assert_valid_canary(&raw, "spammy");
    assert_eq!(msg.subject(), Some("Win a prize"));
    assert_eq!(msg.header("Precedence").unwrap().as_text(), Some("list"));
    assert_eq!(msg.header("X-Spam-Flag").unwrap().as_text(), Some("YES"));
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(
        text.matches("\r\nprecedence: list\r\n").count(),
        1,
        "replaced in place, once"
    );
    assert!(!text.contains("Precedence: bulk"));
}

#[test]
fn size_pads_with_an_attachment_to_within_a_few_bytes() {
    for (template, size) in [
        ("interpersonal", 2 * 1024 * 1024),
        ("bulk", 300_000),
        ("transactional", 20_000),
    ] {
        let spec = ClassSpec {
            size: Some(size),
            ..builtin(template)
        };
        let raw = rendered(&spec);
        assert!(
            raw.len() as u64 <= size && size - raw.len() as u64 <= 8,
            "{template}: {} vs {size}",
            raw.len()
        );
        let msg = assert_valid_canary(&raw, template);
        assert_eq!(msg.attachment_count(), 1, "{template}");
        let pdf = msg.attachment(0).unwrap();
        assert_eq!(pdf.content_type().unwrap().subtype(), Some("pdf"));
        assert!(pdf.contents().starts_with(b"%PDF-1.4"));
        assert_eq!(msg.content_type().unwrap().subtype(), Some("mixed"));
    }
}

#[test]
fn a_size_below_the_message_leaves_it_alone() {
    let plain = rendered(&builtin("bulk"));
    let spec = ClassSpec {
        size: Some(100),
        ..builtin("bulk")
    };
    assert_eq!(rendered(&spec), plain);
}
