//! The clock the server reads "now" from: the system clock in production, a settable one in tests, so cycle
//! work can be exercised over months in a test that runs in seconds.

use crate::time::UnixTime;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    pub fn system() -> Self {
        Clock { manual: None }
    }

    /// A clock that stays at `t` until set.
    pub fn manual(t: UnixTime) -> Self {
        Clock { manual: Some(Arc::new(AtomicI64::new(t.secs()))) }
    }

    pub fn now(&self) -> UnixTime {
        match &self.manual {
            Some(t) => UnixTime::from_secs(t.load(Ordering::SeqCst)),
            None => crate::time::now(),
        }
    }

    /// Move a manual clock (no effect on the system clock).
    pub fn set(&self, t: UnixTime) {
        if let Some(m) = &self.manual {
            m.store(t.secs(), Ordering::SeqCst);
        }
    }
}
