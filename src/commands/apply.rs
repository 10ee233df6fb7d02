//! Applying commands through the inbox protocol ([`crate::inbox`]): this module supplies the decision of each
//! command type. A `stripe.event` command is verified here and handed to the Stripe intake, so it is
//! deduplicated with webhooks by the Stripe event id.
//!
//! Why commands wait for their account: a `package.purchased` for an account that does not exist yet is most
//! likely ahead of its `account.created`; creating the account from it would skip the signup grant and invent
//! accounts from typos. It waits (reason `unknown_account`) and is applied when the account is created.

use super::{Command, Kind, SOURCE, parse};
use crate::catalog::Catalog;
use crate::inbox::{Decision, Inbox, Incoming, Receipt, Source, keep_failed};
use crate::ledger::{Op, Source as LotSource};
use crate::store::{Batch, BoxFuture, InboxRow, InboxStatus, OnMissing, Request, Store, StoreError};
use crate::stripe::Intake;
use crate::stripe::event::parse_envelope;
use crate::time::UnixTime;
use serde::Serialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What a command came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub id: String,
    pub status: InboxStatus,
    /// True when the command (or the Stripe event it carries) was decided before.
    pub duplicate: bool,
    pub detail: Option<String>,
    pub credits: Option<i64>,
    pub balance: Option<i64>,
}

impl Outcome {
    fn of(id: &str, r: Receipt) -> Self {
        Outcome {
            id: id.to_owned(),
            status: r.status,
            duplicate: r.duplicate,
            detail: r.detail,
            credits: r.applied.as_ref().map(|a| a.credits),
            balance: r.applied.as_ref().map(|a| a.balance.get()),
        }
    }
}

/// Commands as an inbox source.
pub struct Commands {
    pub catalog: Arc<Catalog>,
}

fn account_of(kind: &Kind) -> Option<&str> {
    match kind {
        Kind::AccountCreated { account_id, .. }
        | Kind::PackagePurchased { account_id, .. }
        | Kind::CycleEnded { account_id, .. }
        | Kind::CreditsAdjusted { account_id, .. }
        | Kind::UsageRecorded { account_id, .. } => Some(account_id),
        Kind::StripeEvent { .. } => None,
    }
}

impl Source for Commands {
    type Event = Command;
    const NAME: &'static str = SOURCE;
    const RETRY_ON_REDELIVERY: bool = true;

    fn parse(&self, row: &InboxRow) -> Result<Command, String> {
        parse(row.payload.as_bytes()).map_err(|e| e.to_string())
    }

    fn accounts(&self, cmd: &Command) -> Vec<String> {
        account_of(&cmd.kind).map(str::to_owned).into_iter().collect()
    }

    fn decide<'a>(
        &'a self,
        b: &'a mut Batch,
        cmd: &'a Command,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<Decision, StoreError>> {
        Box::pin(self.decide_command(b, cmd, now))
    }
}

impl Commands {
    async fn decide_command(&self, b: &mut Batch, cmd: &Command, now: UnixTime) -> Result<Decision, StoreError> {
        let (mut req, customer) = match self.request(cmd, now) {
            Ok(r) => r,
            Err(reason) => return Ok(Decision::Failed { reason, facts: vec![] }),
        };
        if let Op::Grant { lot_id, .. } = &req.op
            && let Some(owner) = b.payment_account(lot_id).await?
        {
            // The payment was granted already (maybe to another account): no second grant anywhere.
            req.account = owner;
        }
        let account = req.account.clone();
        match b.apply(&req, None).await {
            Ok(o) => {
                if let Some(c) = customer {
                    b.link_customer(&c, &account, OnMissing::Create, now, &req.cause).await?;
                }
                let facts = match cmd.kind {
                    Kind::AccountCreated { .. } => vec![format!("account:{account}")],
                    _ => vec![],
                };
                Ok(Decision::Applied { account, facts, applied: Some(o.applied().clone()) })
            }
            Err(StoreError::UnknownAccount(a)) => Ok(Decision::Waiting {
                fact: format!("account:{a}"),
                reason: format!("unknown_account: waiting for the account.created of {a}"),
            }),
            Err(e) if e.is_transient() => Err(e),
            Err(e) => Ok(Decision::Failed { reason: e.to_string(), facts: vec![] }),
        }
    }

    /// The ledger request of a command, and a Stripe customer to link. `Err` is a reason it can never apply.
    fn request(&self, cmd: &Command, now: UnixTime) -> Result<(Request, Option<String>), String> {
        let cause = format!("command:{}", cmd.id);
        let req = |account: &str, op: Op, on_missing: OnMissing| Request {
            account: account.into(),
            op,
            cause: cause.clone(),
            key: None,
            on_missing,
            now,
        };
        Ok(match &cmd.kind {
            Kind::AccountCreated { account_id, stripe_customer_id } => {
                let credits = self.catalog.plans.get("free").map(|p| p.signup_credits).unwrap_or(0);
                (req(account_id, Op::Signup { credits }, OnMissing::Create), stripe_customer_id.clone())
            }
            Kind::PackagePurchased { account_id, package, quantity, payment_ref } => {
                let p = self.catalog.packages.get(package).ok_or_else(|| format!("unknown package {package:?}"))?;
                let lot_id = payment_ref.clone().unwrap_or_else(|| format!("command:{}", cmd.id));
                let op = Op::Grant { lot_id: lot_id.into(), source: LotSource::Package, credits: p.credits * quantity };
                (req(account_id, op, OnMissing::Refuse), None)
            }
            Kind::CycleEnded { account_id, .. } => (req(account_id, Op::Tick, OnMissing::Refuse), None),
            Kind::CreditsAdjusted { account_id, credits, reason } => {
                let op = Op::Adjust { key: format!("command:{}", cmd.id), credits: *credits };
                let mut r = req(account_id, op, OnMissing::Refuse);
                r.cause = format!("command:{} ({reason})", cmd.id);
                (r, None)
            }
            Kind::UsageRecorded { account_id, user_id, operation, quantity } => {
                let cost = self.catalog.cost(operation).ok_or_else(|| format!("unknown operation {operation:?}"))?;
                let op = Op::Debit {
                    key: cmd.id.clone(),
                    credits: cost * quantity,
                    user_id: Some(user_id.clone()),
                    operation: Some(operation.clone()),
                };
                (req(account_id, op, OnMissing::Refuse), None)
            }
            Kind::StripeEvent { .. } => return Err("a stripe.event is decided by the Stripe intake".into()),
        })
    }
}

#[derive(Clone)]
pub struct Commander {
    pub store: Store,
    pub intake: Intake,
    pub inbox: Inbox<Commands>,
    pub webhook_secrets: Vec<String>,
    /// Refuse `stripe.event` commands that carry no signature.
    pub require_signature: bool,
}

type Answer = Pin<Box<dyn Future<Output = Result<Outcome, StoreError>> + Send>>;

impl Commander {
    pub fn new(
        store: Store,
        catalog: Arc<Catalog>,
        intake: Intake,
        secrets: Vec<String>,
        require_signature: bool,
        horizon_secs: i64,
    ) -> Self {
        let inbox = Inbox { store: store.clone(), source: Arc::new(Commands { catalog }), horizon_secs };
        Commander { store, intake, inbox, webhook_secrets: secrets, require_signature }
    }

    /// Apply a parsed command once. Queued when called (commands of one account are applied in the order they
    /// are handed here). Errors only when it could not be stored (retry later).
    pub fn apply(&self, cmd: &Command, raw: &str, now: UnixTime) -> Answer {
        let me = self.clone();
        let (cmd, raw) = (cmd.clone(), raw.to_owned());
        if let Kind::StripeEvent { payload, signature } = &cmd.kind {
            let (payload, signature) = (payload.clone(), signature.clone());
            return Box::pin(async move {
                match me.stripe_event(&payload, signature.as_deref(), now).await? {
                    Ok(r) => Ok(Outcome::of(&cmd.id, r)),
                    Err(reason) => me.keep_failed(&cmd.id, "stripe.event", &raw, &reason, now).await,
                }
            });
        }
        let incoming = Incoming { event_id: cmd.id.clone(), kind: cmd.kind.name().into(), payload: raw, created: now };
        let id = cmd.id.clone();
        let decided = self.inbox.receive(incoming, cmd, now);
        Box::pin(async move {
            let r = decided.await?;
            me.inbox.wake(r.facts.clone(), now).await;
            Ok(Outcome::of(&id, r))
        })
    }

    /// Decide a stored command again (replay of a failed or waiting one). An applied one changes nothing.
    pub async fn replay(&self, row_id: i64, now: UnixTime) -> Result<Outcome, StoreError> {
        let row = self.store.inbox_get(&row_id.to_string()).await?;
        let row = row.ok_or_else(|| StoreError::Corrupt(format!("no inbox row {row_id}")))?;
        if let Ok(cmd) = parse(row.payload.as_bytes())
            && let Kind::StripeEvent { payload, signature } = &cmd.kind
            && !row.status.is_final()
        {
            let (status, detail) = match self.stripe_event(payload, signature.as_deref(), now).await? {
                Ok(r) => (r.status, r.detail),
                Err(reason) => (InboxStatus::Failed, Some(reason)),
            };
            let r = crate::inbox::settle(&self.store, row.id, row.status, status, detail, now).await?;
            return Ok(Outcome::of(&row.event_id, r));
        }
        let r = self.inbox.redecide(row_id, None, now).await?;
        self.inbox.wake(r.facts.clone(), now).await;
        Ok(Outcome::of(&row.event_id, r))
    }

    /// Count a command's outcome in the metrics.
    pub fn store_metrics(&self, o: &Outcome) {
        crate::metrics::global().command(if o.duplicate { "duplicate" } else { o.status.as_str() });
    }

    /// Store a command that will not apply (malformed, unknown type, refused) as a failed event.
    pub async fn keep_failed(
        &self,
        id: &str,
        kind: &str,
        raw: &str,
        reason: &str,
        now: UnixTime,
    ) -> Result<Outcome, StoreError> {
        let incoming = Incoming { event_id: id.into(), kind: kind.into(), payload: raw.into(), created: now };
        let r = keep_failed(&self.store, SOURCE, incoming, reason.into(), now).await?;
        Ok(Outcome::of(id, r))
    }

    /// Verify and hand a queued Stripe event to the intake (deduplicated with webhooks by event id).
    /// The inner `Err` is why it can never apply.
    async fn stripe_event(
        &self,
        payload: &str,
        signature: Option<&str>,
        now: UnixTime,
    ) -> Result<Result<Receipt, String>, StoreError> {
        match signature {
            // Authenticity, not freshness: a queued event may wait, so the timestamp tolerance is off.
            Some(sig) => {
                if let Err(e) = crate::stripe::signature::verify(
                    Some(sig),
                    payload.as_bytes(),
                    &self.webhook_secrets,
                    0,
                    now.secs(),
                ) {
                    return Ok(Err(format!("stripe.event signature: {e}")));
                }
            }
            None if self.require_signature => {
                return Ok(Err("stripe.event without a signature (BILLING_QUEUE_REQUIRE_SIGNATURE)".into()));
            }
            None => {}
        }
        let env = match parse_envelope(payload.as_bytes()) {
            Ok(env) => env,
            Err(e) => return Ok(Err(format!("stripe.event payload: {e}"))),
        };
        Ok(Ok(self.intake.receive(&env, payload, now).await?))
    }
}
