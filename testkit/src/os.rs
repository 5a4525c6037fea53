//! Signals, sent with the real `kill`.

use std::process::{Child, Command};

/// Sends a signal (`KILL`, `TERM`, `STOP`, `CONT`, `INT`) with the real `kill`.
pub fn signal(child: &Child, sig: &str) {
    signal_pid(child.id(), sig);
}

/// Sends a signal to a pid with the real `kill`.
pub fn signal_pid(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}
