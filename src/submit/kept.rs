//! Reading results kept in `RESULTS` with direct gets in subject form
//! (`$JS.API.DIRECT.GET.RESULTS.<subject>`, empty body): the one read a
//! tenant account is given, scoped by the server to the tenant's own
//! results, and all a submitter needs.

use async_nats::{Client, Message, RequestErrorKind, StatusCode};

use crate::contract;
use crate::error::{Error, ErrorKind};

/// The subject of a direct get of the last result kept on `subject`.
fn direct_get(subject: &str) -> String {
    format!("$JS.API.DIRECT.GET.{}.{subject}", contract::RESULTS_STREAM)
}

/// The result kept on `subject`, if any. A lookup that fails (a timeout
/// during a leader election, say) counts as nothing kept.
pub(crate) async fn last(client: &Client, subject: &str) -> Option<Message> {
    let msg = client.request(direct_get(subject), "".into()).await.ok()?;
    match msg.status {
        None | Some(StatusCode::OK) => Some(msg),
        Some(_) => None,
    }
}

/// Checks that `RESULTS` answers direct gets (it exists, and this account
/// may read its own results).
///
/// # Errors
/// [`ErrorKind::NotSetUp`] when nothing answers.
pub(crate) async fn check(client: &Client, subject: &str) -> Result<(), Error> {
    match client.request(direct_get(subject), "".into()).await {
        Err(err) if err.kind() == RequestErrorKind::NoResponders => Err(Error::with_source(
            ErrorKind::NotSetUp,
            format!(
                "no {} stream answers: run `fleet setup` (or submit with --create on a single trusted machine)",
                contract::RESULTS_STREAM
            ),
            err,
        )),
        _ => Ok(()),
    }
}
