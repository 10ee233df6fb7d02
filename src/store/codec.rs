//! How the domain types are stored: credits and instants as `BIGINT`, ids as `TEXT`, exactly as the plain
//! numbers and strings were, so the schema did not change. Here and not in `domain/`, so the credit rules stay
//! free of the database crate. A negative count of credits read back is a decode error, never a balance.

use crate::domain::{AccountId, Credits, HoldId, LotId};
use crate::time::UnixTime;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Any, Database, Decode, Encode, Type};

macro_rules! stored_as {
    ($ty:ty, $inner:ty, |$v:ident| $to:expr, |$w:ident| $from:expr) => {
        impl Type<Any> for $ty {
            fn type_info() -> <Any as Database>::TypeInfo {
                <$inner as Type<Any>>::type_info()
            }
            fn compatible(ty: &<Any as Database>::TypeInfo) -> bool {
                <$inner as Type<Any>>::compatible(ty)
            }
        }

        impl Encode<'_, Any> for $ty {
            fn encode_by_ref(&self, buf: &mut <Any as Database>::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
                let $v = self;
                <$inner as Encode<'_, Any>>::encode($to, buf)
            }
        }

        impl<'r> Decode<'r, Any> for $ty {
            fn decode(value: <Any as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let $w = <$inner as Decode<'r, Any>>::decode(value)?;
                $from
            }
        }
    };
}

stored_as!(UnixTime, i64, |t| t.secs(), |n| Ok(UnixTime::from_secs(n)));
stored_as!(Credits, i64, |c| c.get(), |n| Ok(Credits::try_from(n)?));
stored_as!(AccountId, String, |id| id.to_string(), |s| Ok(AccountId::from(s)));
stored_as!(LotId, String, |id| id.to_string(), |s| Ok(LotId::from(s)));
stored_as!(HoldId, String, |id| id.to_string(), |s| Ok(HoldId::from(s)));
