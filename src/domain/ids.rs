//! Ids of accounts, lots and holds: strings on the wire and in the database, distinct types in the code.

use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }

        impl From<&String> for $name {
            fn from(s: &String) -> Self {
                $name(s.clone())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

id!(
    /// An account: the product's id for a customer or team.
    AccountId
);
id!(
    /// A lot: the grant's idempotency key (`signup`, a payment id, `alloc:SUB:CYCLE`, `adjustment:KEY`, ...).
    LotId
);
id!(
    /// A hold, named by the caller.
    HoldId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_is_a_string() {
        let id = LotId::from("pi_1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"pi_1\"");
        assert_eq!(serde_json::from_str::<LotId>("\"pi_1\"").unwrap(), id);
        assert_eq!((format!("{id}"), format!("{id:?}")), ("pi_1".to_owned(), "\"pi_1\"".to_owned()));
        assert!(id == "pi_1" && id.starts_with("pi_"));
    }
}
