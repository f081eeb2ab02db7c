//! `[class.NAME]` custom classes, and resolving a probe's `classes` list.

use std::collections::BTreeMap;

use super::context::Context;
use super::raw::{RawClass, RawSize, Spanned};
use super::{ClassConfig, ConfigError};
use crate::canary::is_label;
use crate::class::{ClassSpec, RESERVED_HEADERS, Template};
use crate::metrics::UNKNOWN_CLASS;

/// Largest `size` accepted: beyond this most servers refuse the message outright, which would
/// measure the size limit, not the delay.
pub const MAX_SIZE: u64 = 50 * 1024 * 1024;
/// Smallest `size` accepted.
pub const MIN_SIZE: u64 = 1024;

/// The custom classes, by name.
pub(super) type Custom = BTreeMap<String, ClassConfig>;

/// Why `unknown` cannot name a class: its series would mix with forged mail's.
fn reserved_class() -> String {
    format!(
        "{UNKNOWN_CLASS:?} is reserved: forged mail claiming a class the probe does not send is \
         counted under class=\"{UNKNOWN_CLASS}\"; give the class another name"
    )
}

impl Context<'_> {
    /// Validates every `[class.NAME]`.
    pub(super) fn custom_classes(
        &self,
        raw: BTreeMap<String, Spanned<RawClass>>,
    ) -> Result<Custom, ConfigError> {
        let mut out = Custom::new();
        for (name, spanned) in raw {
            let key = format!("class.{name}");
            let span = spanned.span();
            if !is_label(&name) {
                let msg = "class names must match [a-z0-9_-]+ (at most 64)".into();
                return Err(self.error(Some(span), &key, msg));
            }
            if name == UNKNOWN_CLASS {
                return Err(self.error(Some(span), &key, reserved_class()));
            }
            if Template::by_name(&name).is_some() {
                let msg =
                    format!("{name:?} is a built-in class; give the custom class another name");
                return Err(self.error(Some(span), &key, msg));
            }
            let class = self.custom_class(&name, &key, spanned.into_inner(), span)?;
            out.insert(name, class);
        }
        Ok(out)
    }

    fn custom_class(
        &self,
        name: &str,
        key: &str,
        raw: RawClass,
        span: std::ops::Range<usize>,
    ) -> Result<ClassConfig, ConfigError> {
        let template = match &raw.template {
            None => {
                return Err(self.error(
                    Some(span),
                    &format!("{key}.template"),
                    "missing required key".into(),
                ));
            }
            Some(t) => Template::by_name(t.get_ref()).ok_or_else(|| {
                self.at(
                    t,
                    &format!("{key}.template"),
                    format!(
                        "unknown template {:?}; templates: interpersonal, transactional, bulk",
                        t.get_ref()
                    ),
                )
            })?,
        };
        let mut headers = Vec::new();
        if let Some(h) = &raw.headers {
            for (field, value) in h.get_ref() {
                let at = format!("{key}.headers.{field}");
                if let Some(problem) = header_problem(field, value) {
                    return Err(self.at(h, &at, problem));
                }
                headers.push((field.clone(), value.clone()));
            }
        }
        let subject = match &raw.subject {
            Some(s) if s.get_ref().contains(['\r', '\n']) => {
                return Err(self.at(s, &format!("{key}.subject"), "must be one line"));
            }
            Some(s)
                if headers
                    .iter()
                    .any(|(f, _)| f.eq_ignore_ascii_case("Subject")) =>
            {
                return Err(self.at(
                    s,
                    &format!("{key}.subject"),
                    "set the subject here or in headers, not both",
                ));
            }
            Some(s) => Some(s.get_ref().clone()),
            None => None,
        };
        let size = match &raw.size {
            None => None,
            Some(s) => Some(self.size(s, &format!("{key}.size"))?),
        };
        let lost_after = match &raw.lost_after {
            Some(v) => Some(self.duration(v, &format!("{key}.lost_after"))?),
            None => None,
        };
        Ok(ClassConfig {
            spec: ClassSpec {
                name: name.to_string(),
                template,
                headers,
                subject,
                size,
            },
            lost_after,
        })
    }

    fn size(&self, raw: &Spanned<RawSize>, key: &str) -> Result<u64, ConfigError> {
        let bytes = match raw.get_ref() {
            RawSize::Bytes(n) => *n,
            RawSize::Text(t) => {
                parse_size(t).map_err(|e| self.at(raw, key, crate::setup::chain(&e)))?
            }
        };
        if !(MIN_SIZE..=MAX_SIZE).contains(&bytes) {
            return Err(self.at(
                raw,
                key,
                format!("{bytes} bytes is outside the sensible range 1KiB..=50MiB"),
            ));
        }
        Ok(bytes)
    }

    /// Resolves a probe's `classes` list (default: the three built-ins).
    pub(super) fn classes(
        &self,
        raw: Option<&Spanned<Vec<String>>>,
        key: &str,
        custom: &Custom,
    ) -> Result<Vec<ClassConfig>, ConfigError> {
        let builtin = |name: &str, template| ClassConfig {
            spec: ClassSpec::builtin(name, template),
            lost_after: None,
        };
        let Some(raw) = raw else {
            return Ok(Template::ALL.iter().map(|(n, t)| builtin(n, *t)).collect());
        };
        if raw.get_ref().is_empty() {
            return Err(self.at(raw, key, "at least one class is needed"));
        }
        let mut out: Vec<ClassConfig> = Vec::new();
        for name in raw.get_ref() {
            if name == UNKNOWN_CLASS {
                return Err(self.at(raw, key, reserved_class()));
            }
            let class = match (Template::by_name(name), custom.get(name)) {
                (Some(t), _) => builtin(name, t),
                (None, Some(c)) => c.clone(),
                (None, None) => {
                    let known: Vec<&str> = Template::ALL
                        .iter()
                        .map(|(n, _)| *n)
                        .chain(custom.keys().map(String::as_str))
                        .collect();
                    let msg = format!(
                        "unknown class {name:?}; known classes: {}",
                        known.join(", ")
                    );
                    return Err(self.at(raw, key, msg));
                }
            };
            if out.iter().any(|c| c.name() == name) {
                return Err(self.at(raw, key, format!("class {name:?} is listed twice")));
            }
            out.push(class);
        }
        Ok(out)
    }
}

/// Why a custom header cannot be used, if it cannot.
fn header_problem(field: &str, value: &str) -> Option<String> {
    if field.is_empty() || !field.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Some(format!("{field:?} is not a valid header field name"));
    }
    if let Some(reserved) = RESERVED_HEADERS
        .iter()
        .find(|r| r.eq_ignore_ascii_case(field))
    {
        return Some(format!(
            "{reserved} is reserved: mailcanary sets it (reserved: {})",
            RESERVED_HEADERS.join(", ")
        ));
    }
    if value.contains(['\r', '\n']) {
        return Some("header values must be one line".into());
    }
    if value.len() > 900 {
        return Some("header value longer than 900 bytes".into());
    }
    None
}

/// Why a size such as `"2MiB"` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SizeError {
    /// No number where the size should start.
    #[error("{text:?} is not a size like \"2MiB\" or \"500KB\"")]
    NotANumber {
        /// The text as written.
        text: String,
        /// Why the number part did not parse.
        #[source]
        source: std::num::ParseFloatError,
    },
    /// A number followed by a unit this parser does not know.
    #[error("unknown size unit {unit:?} in {text:?}; use B, KB, KiB, MB, MiB, GB or GiB")]
    UnknownUnit {
        /// The text as written.
        text: String,
        /// The unit part.
        unit: String,
    },
}

/// Parses `"2MiB"`, `"500 KB"`, `"1500000"` into bytes.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|source| SizeError::NotANumber {
        text: text.to_string(),
        source,
    })?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1024,
        "mb" => 1000 * 1000,
        "mib" => 1024 * 1024,
        "gb" => 1000 * 1000 * 1000,
        "gib" => 1024 * 1024 * 1024,
        _ => {
            return Err(SizeError::UnknownUnit {
                text: text.to_string(),
                unit: unit.trim().to_string(),
            });
        }
    };
    Ok((number * multiplier as f64).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("2MiB"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_size("500 KB"), Ok(500_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("1500000"), Ok(1_500_000));
        assert!(parse_size("2 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn a_bad_size_names_the_text_and_keeps_the_cause() {
        let e = parse_size("1.2.3MiB").unwrap_err();
        assert!(matches!(e, SizeError::NotANumber { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            r#""1.2.3MiB" is not a size like "2MiB" or "500KB""#
        );
        assert_eq!(
            crate::setup::chain(&e),
            r#""1.2.3MiB" is not a size like "2MiB" or "500KB": invalid float literal"#
        );
        let e = parse_size("2 parsecs").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unknown size unit "parsecs" in "2 parsecs"; use B, KB, KiB, MB, MiB, GB or GiB"#
        );
        assert!(std::error::Error::source(&e).is_none());
    }

    #[test]
    fn header_rules() {
        assert_eq!(header_problem("X-Priority", "3"), None);
        assert!(
            header_problem("x-mailcanary", "v=1")
                .unwrap()
                .contains("reserved")
        );
        assert!(
            header_problem("Content-Type", "text/html")
                .unwrap()
                .contains("reserved")
        );
        assert!(
            header_problem("Bad Name", "x")
                .unwrap()
                .contains("not a valid")
        );
        assert!(
            header_problem("X-A", "a\r\nBcc: victim@example.org")
                .unwrap()
                .contains("one line")
        );
    }
}
