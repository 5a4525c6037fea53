//! Edge sites: a site runs its own nats-server as a leaf node of the
//! central cluster, with its own JetStream domain, its own streams and its
//! own nodes. Central nodes back a site up by pulling from the *site's*
//! group consumer through the site's domain API (`$JS.<domain>.API`), as
//! overflow members of the consumer's priority group (ADR-42): the server
//! serves their pulls only while at least `overflow` tasks wait
//! undelivered, so the site's own nodes (which pull unconditionally) get
//! work first.
//!
//! The task's ack, its result's fence and its redelivery stay in the
//! site's streams: a central node writes its result as
//! `edge.<domain>.results.<id>`, which the site's account maps back to
//! `results.<id>` (see `deploy/edge/site.conf`), so "exactly one committed
//! result" holds by the site's own fence.
//!
//! This module is the pure part: checking the settings against the bound
//! consumer, and the subjects a node writes to.

use crate::contract;

/// Where a node takes its tasks from, beyond its group's name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeSettings {
    /// The JetStream domain of the edge site whose group this node serves
    /// (`None`: the server the node is connected to).
    pub domain: Option<String>,
    /// Pull only while at least this many tasks wait undelivered in the
    /// group (an ADR-42 overflow member); `None` pulls unconditionally.
    pub overflow: Option<u64>,
}

/// What a node's pull requests carry, decided from its settings and the
/// bound consumer's priority groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullFields {
    /// The priority group (required by the server when the consumer has one).
    pub group: Option<String>,
    /// The overflow threshold (`min_pending`).
    pub min_pending: Option<u64>,
}

/// Checks a JetStream domain name: one subject token of letters, digits,
/// `-` and `_`.
///
/// # Errors
/// The reason, for a usage error.
pub fn check_domain(domain: &str) -> Result<(), String> {
    if contract::is_name_token(domain, 64) {
        Ok(())
    } else {
        Err(format!(
            "JetStream domain {domain:?} must be 1-64 letters, digits, '-' or '_'"
        ))
    }
}

impl EdgeSettings {
    /// Checks the settings on their own.
    ///
    /// # Errors
    /// The reason, for a usage error.
    pub fn check(&self) -> Result<(), String> {
        if let Some(domain) = &self.domain {
            check_domain(domain)?;
        }
        if self.overflow == Some(0) {
            return Err(
                "--overflow 0 would pull unconditionally: leave it out, or give the backlog (at least 1) that calls for help"
                    .into(),
            );
        }
        Ok(())
    }

    /// What pull requests carry for a consumer whose priority groups are
    /// `groups` and whose policy is overflow (`is_overflow`).
    ///
    /// # Errors
    /// The reason, when an overflow node binds a consumer that has no
    /// overflow priority group (run `fleet setup --priority-group`).
    pub fn pull_fields(
        &self,
        consumer: &str,
        groups: &[String],
        is_overflow: bool,
    ) -> Result<PullFields, String> {
        if self.overflow.is_some() && !is_overflow {
            return Err(format!(
                "--overflow needs group {consumer:?} to be made with an overflow priority group: fleet setup --group {consumer} --priority-group <name>"
            ));
        }
        Ok(PullFields {
            group: groups.first().cloned(),
            min_pending: self.overflow,
        })
    }

    /// Where this node writes `subject` (a result or a dead letter): as it
    /// is on its own server, under `edge.<domain>.` for a site's task.
    pub fn write_subject(&self, subject: String) -> String {
        match &self.domain {
            Some(domain) => contract::edge_subject(domain, &subject),
            None => subject,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(g: &[&str]) -> Vec<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn domains_are_one_plain_token() {
        assert!(check_domain("site1").is_ok());
        assert!(check_domain("shop_7-b").is_ok());
        for bad in ["", "a.b", "a*", "a>", "a b", &"x".repeat(65)] {
            assert!(check_domain(bad).is_err(), "{bad:?}");
        }
        let bad = EdgeSettings {
            domain: Some("a.b".into()),
            ..Default::default()
        };
        assert!(bad.check().is_err());
        let zero = EdgeSettings {
            overflow: Some(0),
            ..Default::default()
        };
        assert!(zero.check().unwrap_err().contains("at least 1"));
    }

    #[test]
    fn site_nodes_send_the_group_and_no_threshold() {
        let site = EdgeSettings::default();
        assert_eq!(
            site.pull_fields("site1", &groups(&["edge"]), true),
            Ok(PullFields {
                group: Some("edge".into()),
                min_pending: None
            })
        );
        // A consumer without groups: plain pulls, as before.
        assert_eq!(
            site.pull_fields("workers", &[], false),
            Ok(PullFields::default())
        );
    }

    #[test]
    fn overflow_nodes_need_an_overflow_group() {
        let central = EdgeSettings {
            domain: Some("site1".into()),
            overflow: Some(4),
        };
        assert_eq!(
            central.pull_fields("site1", &groups(&["edge"]), true),
            Ok(PullFields {
                group: Some("edge".into()),
                min_pending: Some(4)
            })
        );
        let err = central.pull_fields("site1", &[], false).unwrap_err();
        assert!(err.contains("--priority-group"), "{err}");
        assert!(central
            .pull_fields("site1", &groups(&["edge"]), false)
            .is_err());
    }

    #[test]
    fn a_sites_results_are_written_under_its_edge_prefix() {
        let central = EdgeSettings {
            domain: Some("site1".into()),
            overflow: Some(4),
        };
        assert_eq!(
            central.write_subject("results.b.1".into()),
            "edge.site1.results.b.1"
        );
        assert_eq!(
            central.write_subject("dead.echo".into()),
            "edge.site1.dead.echo"
        );
        assert_eq!(
            EdgeSettings::default().write_subject("results.b.1".into()),
            "results.b.1"
        );
    }
}
