//! Operations parsed into a closed enum at the edge of each module.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use crate::constants::operation as op;

/// A `route.operation`, parsed. Unknown operations are kept verbatim in [`Operation::Other`]
/// so a message can still be forwarded unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // The variants are the strings in constants::operation (upstream's, and `renew`).
pub enum Operation {
    Insert,
    Delete,
    Query,
    Update,
    Patch,
    Upload,
    Response,
    Error,
    Keepalive,
    Connect,
    Get,
    GetResult,
    List,
    Detail,
    Delta,
    Document,
    Updated,
    Deleted,
    Connected,
    Disconnected,
    Subscribe,
    Unsubscribe,
    Message,
    Publish,
    Start,
    Stop,
    UnholdUpgrade,
    UpdateNodeActionStatus,
    /// Ours, not upstream's: the compact lease renewal (`protocol::lease`).
    Renew,
    /// Any other string.
    Other(String),
}

const TABLE: &[(&str, Operation)] = &[
    (op::INSERT, Operation::Insert),
    (op::DELETE, Operation::Delete),
    (op::QUERY, Operation::Query),
    (op::UPDATE, Operation::Update),
    (op::PATCH, Operation::Patch),
    (op::UPLOAD, Operation::Upload),
    (op::RESPONSE, Operation::Response),
    (op::ERROR, Operation::Error),
    (op::KEEPALIVE, Operation::Keepalive),
    (op::CONNECT, Operation::Connect),
    (op::GET, Operation::Get),
    (op::GET_RESULT, Operation::GetResult),
    (op::LIST, Operation::List),
    (op::DETAIL, Operation::Detail),
    (op::DELTA, Operation::Delta),
    (op::DOCUMENT, Operation::Document),
    (op::UPDATED, Operation::Updated),
    (op::DELETED, Operation::Deleted),
    (op::CONNECTED, Operation::Connected),
    (op::DISCONNECTED, Operation::Disconnected),
    (op::SUBSCRIBE, Operation::Subscribe),
    (op::UNSUBSCRIBE, Operation::Unsubscribe),
    (op::MESSAGE, Operation::Message),
    (op::PUBLISH, Operation::Publish),
    (op::START, Operation::Start),
    (op::STOP, Operation::Stop),
    (op::UNHOLD_UPGRADE, Operation::UnholdUpgrade),
    (op::UPDATE_NODE_ACTION_STATUS, Operation::UpdateNodeActionStatus),
    (op::RENEW, Operation::Renew),
];

impl Operation {
    /// Parses an operation string (exact, case-sensitive, as upstream compares them).
    pub fn parse(s: &str) -> Self {
        TABLE.iter().find(|(name, _)| *name == s).map(|(_, o)| o.clone()).unwrap_or_else(|| Self::Other(s.to_owned()))
    }

    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Other(s) => s,
            known => TABLE.iter().find(|(_, o)| o == known).map(|(n, _)| *n).unwrap_or(""),
        }
    }
}

impl FromStr for Operation {
    type Err = Infallible;

    /// [`Operation::parse`]: every string is an operation, unknown ones are [`Operation::Other`].
    fn from_str(s: &str) -> Result<Self, Infallible> {
        Ok(Self::parse(s))
    }
}

impl From<&str> for Operation {
    fn from(s: &str) -> Self {
        Self::parse(s)
    }
}

impl AsRef<str> for Operation {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for Operation {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_operation_round_trips() {
        for (name, o) in TABLE {
            assert_eq!(&Operation::parse(name), o);
            assert_eq!(o.as_str(), *name);
        }
        assert_eq!(Operation::parse("Insert"), Operation::Other("Insert".into()));
        assert_eq!(Operation::parse("weird").as_str(), "weird");
        assert_eq!("patch".parse::<Operation>(), Ok(Operation::Patch));
        assert_eq!(Operation::from("keepalive"), Operation::Keepalive);
        assert_eq!(Operation::Response.as_ref(), "response");
        assert!(Operation::Insert == *"insert");
    }
}
