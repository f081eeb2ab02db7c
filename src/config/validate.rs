//! From what the user wrote to what it means: defaults, durations, paths, secrets, and an
//! error that names `file:line:column` and the key for everything that is wrong.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use super::classes::Custom;
use super::context::Context;
use super::raw::{self, RawConfig, RawEndpoint, RawProbe, Spanned};
use super::*;
use crate::canary::{is_agent_id, is_label};

impl Context<'_> {
    pub(super) fn build(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let mut warnings = Vec::new();
        let agent = self.agent(raw.agent.unwrap_or_default())?;
        let defaults = raw.defaults.unwrap_or_default();
        let custom = self.custom_classes(raw.class)?;
        if raw.probe.is_empty() {
            return Err(self.error(None, "probe", "no [[probe]] is configured".into()));
        }
        let mut probes: Vec<ProbeConfig> = Vec::new();
        let mut names = HashSet::new();
        // Each mailbox watched so far (receiving or bounce mailbox alike): the first probe on it
        // and the settings it wants. Keyed, so a thousand probes cost a thousand look-ups, not
        // half a million comparisons (each computing two share keys).
        let mut watched: HashMap<(String, Option<String>), (String, String)> = HashMap::new();
        for (i, spanned) in raw.probe.into_iter().enumerate() {
            let span = spanned.span();
            let probe = spanned.into_inner().with_defaults(&defaults);
            let p = self.probe(probe, &format!("probe[{i}]"), span, &custom, &mut warnings)?;
            if !names.insert(p.name.clone()) {
                let key = format!("probe[{i}].name");
                return Err(self.error(None, &key, format!("duplicate probe name {:?}", p.name)));
            }
            // Probes on one mailbox share one watcher, so they must want the same of it.
            for ours in p.watched() {
                let settings = ours.sharing_settings();
                match watched.entry(ours.share_key()) {
                    Entry::Vacant(slot) => {
                        slot.insert((p.name.clone(), settings));
                    }
                    Entry::Occupied(first) if first.get().1 != settings => {
                        let (q, theirs) = first.get();
                        let key = format!("probe[{i}].mailbox");
                        let msg = format!(
                            "probes {q:?} and {:?} watch the same mailbox ({} {}), which they \
                             share, but configure it differently ({theirs} vs {settings}); make \
                             these settings equal",
                            p.name,
                            ours.protocol(),
                            ours.location(),
                        );
                        return Err(self.error(None, &key, msg));
                    }
                    Entry::Occupied(_) => {}
                }
            }
            probes.push(p);
        }
        Ok(Config {
            path: self.path.to_path_buf(),
            agent,
            probes,
            warnings,
        })
    }

    pub(super) fn agent(&self, raw: raw::RawAgent) -> Result<AgentConfig, ConfigError> {
        let id = match &raw.id {
            Some(id) if !is_agent_id(id.get_ref()) => {
                return Err(self.at(id, "agent.id", "must match [A-Za-z0-9._-]+"));
            }
            Some(id) => id.get_ref().clone(),
            None => {
                let host = gethostname::gethostname().to_string_lossy().into_owned();
                let host = host.split('.').next().unwrap_or_default().to_string();
                if !is_agent_id(&host) {
                    return Err(self.error(
                        None,
                        "agent.id",
                        format!("host name {host:?} is not usable as agent id; set agent.id"),
                    ));
                }
                host
            }
        };
        let secret = match (&raw.secret_file, &raw.secret_env) {
            (Some(f), Some(_)) => {
                return Err(self.at(
                    f,
                    "agent.secret_file",
                    "set secret_file or secret_env, not both",
                ));
            }
            (_, Some(env)) => SecretSource::Env(env.get_ref().clone()),
            (Some(f), None) => SecretSource::File(self.resolve(f.get_ref())),
            (None, None) => SecretSource::File(self.resolve("canary.key")),
        };
        let state_dir = raw
            .state_dir
            .as_ref()
            .map_or_else(|| self.resolve("state"), |s| self.resolve(s.get_ref()));
        let forget_after = match &raw.forget_after {
            Some(v) => self.duration(v, "agent.forget_after")?,
            None => DEFAULT_FORGET_AFTER,
        };
        Ok(AgentConfig {
            id,
            state_dir,
            forget_after,
            secret,
        })
    }

    fn probe(
        &self,
        raw: RawProbe,
        key: &str,
        span: Span,
        custom: &Custom,
        warnings: &mut Vec<String>,
    ) -> Result<ProbeConfig, ConfigError> {
        let missing = |key: &str, field: &str| {
            self.error(
                Some(span.clone()),
                &format!("{key}.{field}"),
                "missing required key".into(),
            )
        };
        let name = raw.name.as_ref().ok_or_else(|| missing(key, "name"))?;
        if !is_label(name.get_ref()) {
            return Err(self.at(
                name,
                &format!("{key}.name"),
                "must match [a-z0-9_-]+ (at most 64)",
            ));
        }
        // From here on the probe is named by its name, which the user can search for.
        let key = format!("probe.{}", name.get_ref());
        let missing = |field: &str| missing(&key, field);
        let address = |v: &Option<Spanned<String>>, field: &str| match v {
            None => Err(missing(field)),
            Some(a) if !is_address(a.get_ref()) => Err(self.at(
                a,
                &format!("{key}.{field}"),
                "expected an address like user@example.org",
            )),
            Some(a) => Ok(a.get_ref().clone()),
        };
        let from = address(&raw.from, "from")?;
        let to = address(&raw.to, "to")?;
        let interval = match &raw.interval {
            Some(v) => self.duration(v, &format!("{key}.interval"))?,
            None => DEFAULT_INTERVAL,
        };
        let lost_after = match &raw.lost_after {
            Some(v) => self.duration(v, &format!("{key}.lost_after"))?,
            None => DEFAULT_LOST_AFTER,
        };
        let late_after = match &raw.late_after {
            Some(v) => self.duration(v, &format!("{key}.late_after"))?,
            None => DEFAULT_LATE_AFTER,
        };
        let classes = self.classes(raw.classes.as_ref(), &format!("{key}.classes"), custom)?;
        let jitter = match &raw.jitter {
            Some(v) => self.duration_or_zero(v, &format!("{key}.jitter"))?,
            None => DEFAULT_JITTER,
        };
        let smtp = raw.smtp.ok_or_else(|| missing("smtp"))?;
        let smtp = self.smtp(&smtp, &format!("{key}.smtp"), &span, warnings)?;
        let mailbox = raw.mailbox.ok_or_else(|| missing("mailbox"))?;
        let trusted_authserv_ids = self.authserv_ids(&mailbox, &format!("{key}.mailbox"))?;
        let mailbox = self.mailbox(&mailbox, &format!("{key}.mailbox"), &span, warnings)?;
        let bounces = match &raw.bounces {
            Some(b) => Some(self.mailbox(b, &format!("{key}.bounces"), &span, warnings)?),
            None => None,
        };
        Ok(ProbeConfig {
            name: name.get_ref().clone(),
            from,
            to,
            interval,
            jitter,
            lost_after,
            late_after,
            classes,
            smtp,
            mailbox,
            bounces,
            trusted_authserv_ids,
        })
    }

    pub(super) fn endpoint(
        &self,
        raw: &RawEndpoint,
        key: &str,
        span: &Span,
        default_tls: TlsMode,
        default_port: fn(TlsMode) -> u16,
    ) -> Result<Endpoint, ConfigError> {
        let host = match &raw.host {
            Some(h) if h.get_ref().trim().is_empty() => {
                return Err(self.at(h, &format!("{key}.host"), "must not be empty"));
            }
            Some(h) => h.get_ref().clone(),
            None => {
                let key = format!("{key}.host");
                return Err(self.error(Some(span.clone()), &key, "missing required key".into()));
            }
        };
        let tls = match &raw.tls {
            None => default_tls,
            Some(t) => {
                match t.get_ref().as_str() {
                    "starttls" => TlsMode::StartTls,
                    "tls" => TlsMode::Tls,
                    "none" => TlsMode::None,
                    other => {
                        return Err(self.at(
                        t,
                        &format!("{key}.tls"),
                        format!("unknown value {other:?}; expected \"starttls\", \"tls\" or \"none\""),
                    ));
                    }
                }
            }
        };
        let port = match &raw.port {
            Some(p) if *p.get_ref() == 0 => {
                return Err(self.at(p, &format!("{key}.port"), "must not be 0"));
            }
            Some(p) => *p.get_ref(),
            None => default_port(tls),
        };
        let ca_file = raw.ca_file.as_ref().map(|f| self.resolve(f.get_ref()));
        if let Some((f, path)) = raw.ca_file.as_ref().zip(ca_file.as_ref())
            && !path.is_file()
        {
            return Err(self.at(
                f,
                &format!("{key}.ca_file"),
                format!("{} is not a readable file", path.display()),
            ));
        }
        let timeout = match &raw.timeout {
            Some(t) => self.duration(t, &format!("{key}.timeout"))?,
            None => DEFAULT_TIMEOUT,
        };
        Ok(Endpoint {
            host,
            port,
            tls,
            tls_verify: raw.tls_verify.as_ref().is_none_or(|v| *v.get_ref()),
            ca_file,
            timeout,
        })
    }

    pub(super) fn credentials(
        &self,
        raw: &RawEndpoint,
        key: &str,
        span: &Span,
        warnings: &mut Vec<String>,
    ) -> Result<Option<Credentials>, ConfigError> {
        let login = login::resolve(self, raw, key, warnings)?;
        match (&raw.username, login) {
            (None, None) => Ok(None),
            (Some(user), Some(login)) => Ok(Some(Credentials {
                username: user.get_ref().clone(),
                login,
            })),
            (Some(user), None) => Err(self.at(
                user,
                &format!("{key}.username"),
                "a username needs password_env, password_file or password, or a token source \
                 (oauth2 or token_command)",
            )),
            (None, Some(_)) => Err(self.error(
                Some(span.clone()),
                &format!("{key}.username"),
                "a login is configured but no username".into(),
            )),
        }
    }

    fn smtp(
        &self,
        raw: &RawEndpoint,
        key: &str,
        span: &Span,
        warnings: &mut Vec<String>,
    ) -> Result<SmtpConfig, ConfigError> {
        let endpoint = self.endpoint(raw, key, span, TlsMode::StartTls, |tls| match tls {
            TlsMode::StartTls => 587,
            TlsMode::Tls => 465,
            TlsMode::None => 25,
        })?;
        let credentials = self.credentials(raw, key, span, warnings)?;
        Ok(SmtpConfig {
            endpoint,
            credentials,
        })
    }
}

/// A deliberately loose address check: something@something, no spaces or angle brackets.
fn is_address(s: &str) -> bool {
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';'))
        }
        None => false,
    }
}
