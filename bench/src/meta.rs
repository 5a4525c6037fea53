//! What a run says about itself: when, at which commit, on which server.

/// The commit under test, `+dirty` when the work tree has changes.
pub fn git_describe() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(fleet_testkit::root())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let head = run(&["rev-parse", "--short", "HEAD"]);
    let dirty = !run(&["status", "--porcelain"]).is_empty();
    format!("{head}{}", if dirty { "+dirty" } else { "" })
}

/// `nats-server --version` of the pinned server.
pub fn server_version() -> String {
    std::process::Command::new(fleet_testkit::tool("nats-server"))
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .trim_start_matches("nats-server: ")
                .to_string()
        })
        .unwrap_or_default()
}

/// Now, UTC, RFC 3339 to the second.
pub fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
