//! Rows of fleet under least privilege, beside auth off.

use super::*;

/// fleet kept, window 256, 1 node, with auth off (`nats.conf`, no users:
/// the runs of "kept, 1 node") and under least privilege (the shipped
/// `deploy/secure/nats.conf`), submitted by admin and by a tenant; the
/// runs of each round follow one another, so the ratios hold.
pub(super) fn security_rows(x: &Ctx<'_>, r: &mut Vec<Row>) {
    let g = "security: least privilege on and off (steady tasks/s)";
    let off = "fleet_kept_w256_n1";
    r.push(row(
        "security_off_kept_w256",
        g,
        "kept, 1 node, auth off",
        x.rate(off),
        "tasks/s",
        None,
        None,
        None,
        format!(
            "{} tasks; nats.conf, no users: the runs of \"kept, 1 node\", the reference below",
            x.c.tput
        ),
    ));
    let cpu = |on: &str, of: fn(&Run) -> Option<f64>| {
        x.per_100k(on, of)
            .zip(x.per_100k(off, of))
            .map_or(0.0, |(a, b)| a / b)
    };
    for (who, how) in [
        ("admin", "admin submits in the FLEET account"),
        (
            "alice",
            "tenant alice submits: tasks cross the service import into FLEET, results the stream imports back",
        ),
    ] {
        let on = format!("fleet_kept_w256_n1_secure_{who}");
        r.push(row(
            &format!("security_{who}_kept_w256"),
            g,
            &format!("kept, 1 node, least privilege, {who} submits"),
            x.rate(&on),
            "tasks/s",
            x.rate(off),
            Some("fleet kept, auth off"),
            None,
            format!(
                "{} tasks; deploy/secure/nats.conf as shipped: streams made by admin, the node as \
                 the node role (_INBOX_node), {how}; CPU per task x{:.2} server, x{:.2} node, \
                 x{:.2} submit of auth off (the server's: one bcrypt check per connection too)",
                x.c.tput,
                cpu(&on, |r| r.server_cpu_s),
                cpu(&on, |r| r.node_cpu_s),
                cpu(&on, |r| r.submit_cpu_s),
            ) + &x.per_round(&on, off)
                + &x.duplicates(&on),
        ));
    }
}
