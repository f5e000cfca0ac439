//! `[security]` of `collector.toml`: which hosts a broker user may write lines for.
//!
//! The agent sets the AMQP `user_id` property to the user it connected as, and RabbitMQ refuses
//! a publish whose `user_id` is not the connection's user. With `host_from_user = "require"` the
//! collector writes a line only if its envelope's `host` is allowed for that user: the user's own
//! name, or one of the hosts `[security.hosts]` lists for it. Anything else is rejected.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;

use crate::error::KeyError;

/// `[security]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecurity {
    /// `"off"` (the default) or `"require"`.
    pub host_from_user: Option<String>,
    /// `[security.hosts]`: user name to the hosts it may also write for.
    #[serde(default)]
    pub hosts: BTreeMap<String, Vec<String>>,
}

/// Whether the envelope's host must match the broker-validated user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HostFromUser {
    /// Any host is accepted from any user (the behaviour before `[security]` existed).
    #[default]
    Off,
    /// A message without `user_id`, or whose host is not allowed for it, is rejected.
    Require,
}

/// Validated `[security]`.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub host_from_user: HostFromUser,
    /// Hosts each user may write for besides the one named like the user.
    pub hosts: HashMap<String, BTreeSet<String>>,
}

impl Security {
    /// Whether a message from `user` (its validated `user_id`, if any) may carry `host`.
    /// Always true when `host_from_user` is off.
    pub fn allows(&self, user: Option<&str>, host: &str) -> bool {
        match self.host_from_user {
            HostFromUser::Off => true,
            HostFromUser::Require => user.is_some_and(|user| {
                user == host || self.hosts.get(user).is_some_and(|h| h.contains(host))
            }),
        }
    }
}

impl RawSecurity {
    /// Checks the values; errors name `security.host_from_user` or `security.hosts.<user>`.
    pub fn validate(self) -> Result<Security, KeyError> {
        let host_from_user = match self.host_from_user.as_deref() {
            None | Some("off") => HostFromUser::Off,
            Some("require") => HostFromUser::Require,
            Some(other) => {
                return Err(KeyError::new(
                    "security.host_from_user",
                    format!("unknown value \"{other}\" (off or require)"),
                ));
            }
        };
        let mut hosts = HashMap::with_capacity(self.hosts.len());
        for (user, list) in self.hosts {
            let key = format!("security.hosts.{user}");
            if user.is_empty() {
                return Err(KeyError::new(
                    "security.hosts",
                    "a user name must not be empty",
                ));
            }
            let mut allowed = BTreeSet::new();
            for host in list {
                // The same rule the collector applies to an envelope's host (its output
                // directory): a host that could never be written is a typo.
                if host.is_empty()
                    || host == "."
                    || host == ".."
                    || host.len() > 255
                    || host.contains(['/', '\0'])
                {
                    return Err(KeyError::new(key, format!("invalid host \"{host}\"")));
                }
                allowed.insert(host);
            }
            hosts.insert(user, allowed);
        }
        Ok(Security {
            host_from_user,
            hosts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Security, KeyError> {
        toml::from_str::<RawSecurity>(text).unwrap().validate()
    }

    #[test]
    fn off_allows_anything_and_require_only_the_user_or_its_hosts() {
        let off = parse("").unwrap();
        assert!(off.allows(None, "x"));
        let require = parse(
            "host_from_user = \"require\"\n[hosts]\n\"agent-web\" = [\"web-1\", \"web-2\"]\n",
        )
        .unwrap();
        assert!(require.allows(Some("db-1"), "db-1"));
        assert!(require.allows(Some("agent-web"), "web-2"));
        assert!(require.allows(Some("agent-web"), "agent-web"));
        assert!(!require.allows(Some("agent-web"), "web-3"));
        assert!(!require.allows(Some("db-1"), "web-1"));
        assert!(!require.allows(None, "web-1"));
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(
            parse("host_from_user = \"yes\"").unwrap_err().key,
            "security.host_from_user"
        );
        assert_eq!(
            parse("[hosts]\nweb = [\"a/b\"]").unwrap_err().key,
            "security.hosts.web"
        );
        assert_eq!(
            parse("[hosts]\n\"\" = [\"a\"]").unwrap_err().key,
            "security.hosts"
        );
    }
}
