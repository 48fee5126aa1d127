//! `keadm ctl confirm`: lets a node upgrade that waits for confirmation (`requireConfirmation`)
//! go on, with upstream's request `POST /api/v1/taskupgrade/confirm-upgrade` to the local
//! MetaServer. 200 → "confirmed"; any other answer (400 "there are no valid upgrade tasks to
//! execute" when nothing waits) is printed as the error.

use http::Method;

use super::Error;
use super::edge::Edge;

/// The request path.
pub const PATH: &str = "/api/v1/taskupgrade/confirm-upgrade";

/// `keadm ctl confirm` flags (none).
#[derive(clap::Args, Debug)]
pub struct Args {}

pub async fn run(edge: &Edge) -> Result<(), Error> {
    let ms = edge.metaserver()?;
    let (status, body) = ms.call(Method::POST, PATH, None).await?;
    if !status.is_success() {
        return Err(ms.status(PATH, status, &body));
    }
    println!("confirmed");
    Ok(())
}
