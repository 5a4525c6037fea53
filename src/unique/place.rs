//! Where unique keys are kept, as one connection reaches them (pure): the
//! one protocol of [`super`] runs on either place.
//!
//! | place                      | who                     | key subject (publish)                  | read (direct get)                                                   |
//! |----------------------------|-------------------------|----------------------------------------|---------------------------------------------------------------------|
//! | [`Place::fleet`]           | the fleet account       | `$KV.fleet-unique.<name>`              | `$JS.API.DIRECT.GET.KV_fleet-unique.$KV.fleet-unique.<name>`        |
//! | [`Place::tenant`]          | a tenant's own users    | `sched.unique.<name>`                  | `$JS.API.DIRECT.GET.SCHEDULES` + `{"last_by_subj":"tenant.<t>.sched.unique.<name>"}` |
//! | [`Place::tenant_from_fleet`] | a node (fleet account) | `tenant.<t>.sched.unique.<name>`       | `$JS.API.DIRECT.GET.SCHEDULES_<t>.tenant.<t>.sched.unique.<name>`   |
//!
//! A tenant's keys live in its own schedule stream `SCHEDULES_<t>`, never
//! in the shared bucket: a stream whose messages have a TTL allows
//! rollups, and a `Nats-Rollup: all` from a tenant would wipe every key
//! of the bucket; in its own stream it wipes its own. Its import maps
//! `sched.>` to `tenant.<t>.sched.>` and the direct get of `SCHEDULES` to
//! `SCHEDULES_<t>` (a whole API subject, so the subject read goes in the
//! JSON body, in the fleet account's form).

use bytes::Bytes;

use crate::contract;

/// Where one connection reaches the unique keys of one space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// A key's subject as this connection publishes it, without the name.
    publish_prefix: String,
    /// A key's subject as the stream stores it, without the name.
    stored_prefix: String,
    /// The stream's direct get as this connection reaches it.
    direct_get: String,
    /// The stored subject goes in a JSON body (`last_by_subj`), not after
    /// the direct get's subject.
    in_body: bool,
    /// What to run when the place is missing.
    set_up_by: String,
}

impl Place {
    /// The fleet account's bucket [`contract::UNIQUE_BUCKET`].
    pub fn fleet() -> Place {
        let prefix = format!("$KV.{}.", contract::UNIQUE_BUCKET);
        Place {
            publish_prefix: prefix.clone(),
            stored_prefix: prefix,
            direct_get: contract::api::direct_get(&format!("KV_{}", contract::UNIQUE_BUCKET)),
            in_body: false,
            set_up_by: "no fleet-unique bucket: run `fleet setup`".into(),
        }
    }

    /// `tenant`'s keys as its own users reach them, through the imports
    /// of `sched.>` and of the direct get of `SCHEDULES`.
    pub fn tenant(tenant: &str) -> Place {
        Place {
            publish_prefix: contract::tenant_unique_subject(""),
            stored_prefix: contract::in_tenant(Some(tenant), &contract::tenant_unique_subject("")),
            direct_get: contract::api::direct_get(contract::SCHEDULES_STREAM),
            in_body: true,
            set_up_by: format!(
                "no stream takes {}: the fleet's admin runs `fleet setup --tenant {tenant}` (and the server's config imports sched.> for this account)",
                contract::tenant_unique_subject("…")
            ),
        }
    }

    /// `tenant`'s keys as the fleet account (a node) reaches them.
    pub fn tenant_from_fleet(tenant: &str) -> Place {
        let prefix = contract::in_tenant(Some(tenant), &contract::tenant_unique_subject(""));
        Place {
            publish_prefix: prefix.clone(),
            stored_prefix: prefix,
            direct_get: contract::api::direct_get(&contract::tenant_schedules_stream(tenant)),
            in_body: false,
            set_up_by: format!("no stream SCHEDULES_{tenant}: run `fleet setup --tenant {tenant}`"),
        }
    }

    /// Where a task's key is, seen from the fleet account: its tenant's
    /// stream (the tenant its subject is under), or the fleet's bucket.
    pub fn of_task(tenant: Option<&str>) -> Place {
        tenant.map_or_else(Place::fleet, Place::tenant_from_fleet)
    }

    /// The subject key `name` is written to.
    pub(super) fn publish_subject(&self, name: &str) -> String {
        format!("{}{name}", self.publish_prefix)
    }

    /// The request that reads the last write of key `name`: its subject
    /// and body.
    pub(super) fn read_request(&self, name: &str) -> (String, Bytes) {
        let stored = format!("{}{name}", self.stored_prefix);
        if self.in_body {
            let body = serde_json::json!({ "last_by_subj": stored }).to_string();
            (self.direct_get.clone(), Bytes::from(body))
        } else {
            (format!("{}.{stored}", self.direct_get), Bytes::new())
        }
    }

    /// What to do when nothing takes the key's subject.
    pub(super) fn set_up_by(&self) -> &str {
        &self.set_up_by
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleets_keys_are_in_its_bucket() {
        let p = Place::fleet();
        assert_eq!(p.publish_subject("echo.r-1"), "$KV.fleet-unique.echo.r-1");
        assert_eq!(
            p.read_request("echo.r-1"),
            (
                "$JS.API.DIRECT.GET.KV_fleet-unique.$KV.fleet-unique.echo.r-1".to_string(),
                Bytes::new()
            )
        );
        assert_eq!(Place::of_task(None), p);
    }

    #[test]
    fn a_tenants_keys_are_in_its_own_stream_from_either_side() {
        let own = Place::tenant("alice");
        assert_eq!(own.publish_subject("echo.k"), "sched.unique.echo.k");
        let (subject, body) = own.read_request("echo.k");
        assert_eq!(subject, "$JS.API.DIRECT.GET.SCHEDULES");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"last_by_subj": "tenant.alice.sched.unique.echo.k"})
        );
        assert!(own.set_up_by().contains("fleet setup --tenant alice"));

        let node = Place::of_task(Some("alice"));
        assert_eq!(node, Place::tenant_from_fleet("alice"));
        assert_eq!(
            node.publish_subject("echo.k"),
            "tenant.alice.sched.unique.echo.k"
        );
        assert_eq!(
            node.read_request("echo.k"),
            (
                "$JS.API.DIRECT.GET.SCHEDULES_alice.tenant.alice.sched.unique.echo.k".to_string(),
                Bytes::new()
            )
        );
    }
}
