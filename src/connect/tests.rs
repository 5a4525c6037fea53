//! Unit tests of connection options: no server needed.

use super::*;

#[test]
fn url_credentials_are_split_off() {
    let u = split_url("nats://alice:s%40cret@127.0.0.1:4222");
    assert_eq!(u.url, "nats://127.0.0.1:4222");
    assert_eq!(u.user.as_deref(), Some("alice"));
    assert_eq!(u.password.as_deref(), Some("s@cret"));
    let t = split_url("tls://tok3n@host:4443");
    assert_eq!(
        (t.url.as_str(), t.user.as_deref(), t.password),
        ("tls://host:4443", Some("tok3n"), None)
    );
    let plain = split_url(" 127.0.0.1:4222 ");
    assert_eq!((plain.url.as_str(), plain.user), ("127.0.0.1:4222", None));
}

#[test]
fn shown_urls_and_debug_never_carry_secrets() {
    let config = ConnectConfig {
        servers: "nats://u:hunter2@a:1,nats://tok@b:2".into(),
        auth: Auth {
            password: Some("hunter3".into()),
            token: Some("t0k".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(redact_urls(&config.servers), "nats://a:1,nats://b:2");
    let debug = format!("{config:?}");
    for secret in ["hunter2", "hunter3", "t0k", "tok@"] {
        assert!(!debug.contains(secret), "{debug}");
    }
}

#[test]
fn the_ping_interval_defaults_short_and_zero_is_refused() {
    let with = |ping| ConnectConfig {
        servers: "nats://127.0.0.1:4222".into(),
        ping_interval: ping,
        ..Default::default()
    };
    let shown = |c: ConnectConfig| format!("{:?}", c.options().unwrap().0);
    let default = crate::contract::DEFAULT_PING_INTERVAL;
    assert!(default <= Duration::from_secs(20), "{default:?}");
    assert!(shown(with(None)).contains(&format!("\"ping_interval\": {default:?}")));
    assert!(shown(with(Some(Duration::from_secs(1)))).contains("\"ping_interval\": 1s"));
    let zero = with(Some(Duration::ZERO)).options().unwrap_err();
    assert_eq!(zero.kind(), ErrorKind::Usage);
}

#[test]
fn two_ways_to_authenticate_is_a_usage_error() {
    let config = ConnectConfig {
        servers: "nats://127.0.0.1:4222".into(),
        auth: Auth {
            token: Some("a".into()),
            creds_file: Some("/x".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(config.options().unwrap_err().kind(), ErrorKind::Usage);
    let half = ConnectConfig {
        servers: "nats://127.0.0.1:4222".into(),
        auth: Auth {
            user: Some("a".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(half.options().unwrap_err().kind(), ErrorKind::Usage);
}

#[test]
fn the_salt_follows_the_secret_and_shows_none_of_it() {
    let with = |password: &str| ConnectConfig {
        auth: Auth {
            user: Some("u".into()),
            password: Some(password.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let a = with("hunter2").msg_id_salt().unwrap();
    assert_eq!(a, with("hunter2").msg_id_salt().unwrap());
    assert_ne!(a, with("hunter3").msg_id_salt().unwrap());
    assert_eq!(a.len(), 16);
    assert!(!a.contains("hunter"));
    assert_eq!(ConnectConfig::default().msg_id_salt(), None);
    let url = ConnectConfig {
        servers: "nats://tok@h:1".into(),
        ..Default::default()
    };
    assert!(url.msg_id_salt().is_some());
}

#[test]
fn a_bad_percent_escape_is_kept_as_written() {
    assert_eq!(percent_decode("a%zzb%4"), "a%zzb%4");
    assert_eq!(percent_decode("%41%62"), "Ab");
}
