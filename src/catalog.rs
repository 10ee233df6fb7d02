//! The catalog: plans, credit packages, operation costs and how Stripe prices map to them.
//!
//! Why built in and overlaid: the worker must run with no file at all and reproduce the product text, while a
//! deployment names its own Stripe prices and packages. A TOML file (`BILLING_CONFIG`) is laid over the
//! built-in catalog: a plan, package or cost it names replaces the built-in one, new names are added.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bound on any credit amount in the catalog, so products of amounts and quantities cannot overflow.
pub const MAX_CREDITS: i64 = 1_000_000_000;

pub const PRIORITIES: [&str; 3] = ["basic", "medium", "high"];
pub const RESOLUTIONS: [&str; 4] = ["720p", "1080p", "4k", "8k"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    #[serde(default)]
    pub monthly_credits: i64,
    #[serde(default)]
    pub rollover_cap: i64,
    /// Credits granted once when an account is created on this plan (only the free plan has them).
    #[serde(default)]
    pub signup_credits: i64,
    /// Team seats; omitted: unlimited.
    #[serde(default)]
    pub seats: Option<u32>,
    /// Days generated images are kept; omitted: unlimited.
    #[serde(default)]
    pub storage_days: Option<u32>,
    #[serde(default = "default_resolution")]
    pub max_resolution: String,
    #[serde(default = "default_priority")]
    pub priority: String,
    #[serde(default)]
    pub price_monthly_cents: Option<i64>,
    #[serde(default)]
    pub price_yearly_cents: Option<i64>,
    #[serde(default)]
    pub analytics: bool,
    #[serde(default)]
    pub api_access: bool,
    /// Stripe price ids or lookup keys that mean this plan.
    #[serde(default)]
    pub stripe_prices: Vec<String>,
}

fn default_resolution() -> String {
    "1080p".into()
}
fn default_priority() -> String {
    "basic".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub credits: i64,
    #[serde(default)]
    pub price_cents: Option<i64>,
    #[serde(default)]
    pub stripe_prices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    #[serde(default)]
    pub plans: BTreeMap<String, Plan>,
    #[serde(default)]
    pub packages: BTreeMap<String, Package>,
    #[serde(default)]
    pub costs: BTreeMap<String, i64>,
}

/// What a Stripe price means to the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceUse {
    Plan(String),
    Package(String),
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{key}: {message}")]
pub struct CatalogError {
    /// The TOML key at fault, such as `plans.basic.priority`.
    pub key: String,
    pub message: String,
}

/// What a plan of the product text gives: its credits, seats, storage and quality.
struct Gives {
    monthly: i64,
    cap: i64,
    signup: i64,
    seats: Option<u32>,
    storage: Option<u32>,
    resolution: &'static str,
    priority: &'static str,
    /// Analytics and API access.
    pro_features: bool,
}

/// A plan of the product text; one with prices (monthly, yearly, in cents) is sold as `NAME_monthly` and
/// `NAME_yearly` unless the configuration maps other Stripe prices.
fn plan(name: &str, g: Gives, prices: Option<(i64, i64)>) -> Plan {
    Plan {
        monthly_credits: g.monthly,
        rollover_cap: g.cap,
        signup_credits: g.signup,
        seats: g.seats,
        storage_days: g.storage,
        max_resolution: g.resolution.into(),
        priority: g.priority.into(),
        price_monthly_cents: prices.map(|p| p.0),
        price_yearly_cents: prices.map(|p| p.1),
        analytics: g.pro_features,
        api_access: g.pro_features,
        stripe_prices: if prices.is_some() {
            vec![format!("{name}_monthly"), format!("{name}_yearly")]
        } else {
            vec![]
        },
    }
}

impl Catalog {
    /// The catalog of the product text (SPEC §3).
    pub fn builtin() -> Self {
        let mut plans = BTreeMap::new();
        let gives = |monthly, cap, seats, storage, resolution, priority| Gives {
            monthly,
            cap,
            signup: 0,
            seats,
            storage,
            resolution,
            priority,
            pro_features: false,
        };
        let free = Gives { signup: 5, ..gives(0, 0, Some(1), Some(30), "1080p", "basic") };
        plans.insert("free".into(), plan("free", free, Some((0, 0))));
        plans.get_mut("free").unwrap().stripe_prices.clear();
        plans.insert(
            "basic".into(),
            plan("basic", gives(20, 40, Some(1), Some(90), "1080p", "basic"), Some((999, 9999))),
        );
        plans
            .insert("pro".into(), plan("pro", gives(50, 100, Some(3), Some(365), "4k", "medium"), Some((1999, 19999))));
        let business = Gives { pro_features: true, ..gives(150, 300, Some(10), None, "8k", "high") };
        plans.insert("business".into(), plan("business", business, Some((4999, 49999))));
        let enterprise = Gives { pro_features: true, ..gives(0, 0, None, None, "8k", "high") };
        plans.insert("enterprise".into(), plan("enterprise", enterprise, None));
        let packages = [("credits_25", 25), ("credits_100", 100), ("credits_500", 500)]
            .into_iter()
            .map(|(n, c)| {
                (n.to_string(), Package { credits: c, price_cents: None, stripe_prices: vec![n.to_string()] })
            })
            .collect();
        let costs = [
            ("image.720p", 1),
            ("image.1080p", 2),
            ("image.4k", 3),
            ("image.8k", 4),
            ("chat.message", 1),
            ("analysis.basic", 1),
            ("analysis.detailed", 2),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Catalog { plans, packages, costs }
    }

    /// The built-in catalog with the TOML text `toml` laid over it, validated.
    pub fn with_overlay(toml_text: &str) -> Result<Self, CatalogError> {
        let file: Catalog = toml::from_str(toml_text).map_err(|e| {
            let key = e.message().split('`').nth(1).map(str::to_owned).unwrap_or_else(|| "catalog".into());
            CatalogError { key, message: e.to_string().replace('\n', " ") }
        })?;
        let mut c = Catalog::builtin();
        c.plans.extend(file.plans);
        c.packages.extend(file.packages);
        c.costs.extend(file.costs);
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), CatalogError> {
        let err = |key: String, message: &str| Err(CatalogError { key, message: message.into() });
        if !self.plans.contains_key("free") {
            return err("plans.free".into(), "the free plan is required: accounts fall back to it");
        }
        let mut seen: BTreeMap<&str, String> = BTreeMap::new();
        for (name, p) in &self.plans {
            let k = |f: &str| format!("plans.{name}.{f}");
            if !(0..=MAX_CREDITS).contains(&p.monthly_credits) {
                return err(k("monthly_credits"), "must be between 0 and 1000000000");
            }
            if !(0..=MAX_CREDITS).contains(&p.rollover_cap) {
                return err(k("rollover_cap"), "must be between 0 and 1000000000");
            }
            if p.signup_credits < 0 {
                return err(k("signup_credits"), "must be 0 or more");
            }
            if p.seats == Some(0) {
                return err(k("seats"), "must be 1 or more (omit it for unlimited)");
            }
            if !PRIORITIES.contains(&p.priority.as_str()) {
                return err(k("priority"), "must be one of basic, medium, high");
            }
            if !RESOLUTIONS.contains(&p.max_resolution.as_str()) {
                return err(k("max_resolution"), "must be one of 720p, 1080p, 4k, 8k");
            }
            if p.price_monthly_cents.is_some_and(|c| c < 0) || p.price_yearly_cents.is_some_and(|c| c < 0) {
                return err(k("price_monthly_cents"), "prices must be 0 or more");
            }
            for price in &p.stripe_prices {
                if let Some(other) = seen.insert(price, format!("plans.{name}")) {
                    return err(k("stripe_prices"), &format!("price {price} is also mapped by {other}"));
                }
            }
        }
        for (name, p) in &self.packages {
            if !(1..=MAX_CREDITS).contains(&p.credits) {
                return err(format!("packages.{name}.credits"), "must be between 1 and 1000000000");
            }
            for price in &p.stripe_prices {
                if let Some(other) = seen.insert(price, format!("packages.{name}")) {
                    return err(
                        format!("packages.{name}.stripe_prices"),
                        &format!("price {price} is also mapped by {other}"),
                    );
                }
            }
        }
        for (op, cost) in &self.costs {
            if !(1..=1_000_000).contains(cost) {
                return err(format!("costs.\"{op}\""), "must be between 1 and 1000000");
            }
        }
        Ok(())
    }

    /// The plan or package a Stripe price id or lookup key stands for.
    pub fn price(&self, id_or_lookup_key: &str) -> Option<PriceUse> {
        if let Some((n, _)) = self.plans.iter().find(|(_, p)| p.stripe_prices.iter().any(|s| s == id_or_lookup_key)) {
            return Some(PriceUse::Plan(n.clone()));
        }
        self.packages
            .iter()
            .find(|(_, p)| p.stripe_prices.iter().any(|s| s == id_or_lookup_key))
            .map(|(n, _)| PriceUse::Package(n.clone()))
    }

    /// The plan named `name`, or the free plan.
    pub fn plan_or_free(&self, name: &str) -> &Plan {
        self.plans.get(name).or_else(|| self.plans.get("free")).expect("validated: the free plan exists")
    }

    /// Whether a plan may run an operation: image resolutions up to the plan's `max_resolution`.
    pub fn entitled(&self, plan: &Plan, operation: &str) -> bool {
        let rank = |r: &str| RESOLUTIONS.iter().position(|x| *x == r);
        match operation.strip_prefix("image.").and_then(rank) {
            Some(wanted) => rank(&plan.max_resolution).is_some_and(|max| wanted <= max),
            None => true,
        }
    }

    /// Credits an operation costs per unit.
    pub fn cost(&self, operation: &str) -> Option<i64> {
        self.costs.get(operation).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_reproduces_the_product_text() {
        let c = Catalog::builtin();
        c.validate().unwrap();
        let p = |n: &str| c.plans[n].clone();
        assert_eq!((p("free").signup_credits, p("free").monthly_credits, p("free").seats), (5, 0, Some(1)));
        assert_eq!((p("basic").monthly_credits, p("basic").rollover_cap, p("basic").storage_days), (20, 40, Some(90)));
        assert_eq!(
            (p("pro").monthly_credits, p("pro").rollover_cap, p("pro").seats, p("pro").max_resolution.as_str()),
            (50, 100, Some(3), "4k")
        );
        assert_eq!(
            (p("business").monthly_credits, p("business").rollover_cap, p("business").seats),
            (150, 300, Some(10))
        );
        assert!(p("business").analytics && p("business").api_access && p("business").storage_days.is_none());
        assert_eq!(p("enterprise").seats, None);
        assert_eq!((p("basic").price_monthly_cents, p("basic").price_yearly_cents), (Some(999), Some(9999)));
        assert_eq!(c.cost("image.8k"), Some(4));
        assert_eq!(c.cost("analysis.detailed"), Some(2));
        assert_eq!(c.price("pro_yearly"), Some(PriceUse::Plan("pro".into())));
        assert_eq!(c.price("credits_100"), Some(PriceUse::Package("credits_100".into())));
        assert_eq!(c.price("price_unknown"), None);
    }

    #[test]
    fn overlay_replaces_adds_and_keeps() {
        let c = Catalog::with_overlay(
            r#"
            [plans.basic]
            monthly_credits = 30
            rollover_cap = 60
            stripe_prices = ["price_basic"]
            [packages.credits_1000]
            credits = 1000
            [costs]
            "video.clip" = 10
            "#,
        )
        .unwrap();
        assert_eq!(c.plans["basic"].monthly_credits, 30);
        assert_eq!(c.price("price_basic"), Some(PriceUse::Plan("basic".into())));
        assert_eq!(c.price("basic_monthly"), None, "a replaced plan keeps none of the built-in fields");
        assert_eq!(c.plans["pro"].monthly_credits, 50);
        assert_eq!(c.packages["credits_1000"].credits, 1000);
        assert_eq!(c.cost("video.clip"), Some(10));
        assert_eq!(c.cost("chat.message"), Some(1));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[plans.basic]\npriority = \"urgent\"", "plans.basic.priority"),
            ("[plans.basic]\nmax_resolution = \"16k\"", "plans.basic.max_resolution"),
            ("[plans.pro]\nmonthly_credits = -1", "plans.pro.monthly_credits"),
            ("[plans.pro]\nseats = 0", "plans.pro.seats"),
            ("[packages.x]\ncredits = 0", "packages.x.credits"),
            ("[costs]\n\"chat.message\" = 0", "costs.\"chat.message\""),
            ("[packages.x]\ncredits = 5\nstripe_prices = [\"basic_monthly\"]", "packages.x.stripe_prices"),
            ("[plans.basic]\nmonthly_credit = 3", "monthly_credit"),
            ("[plans.basic]\nmonthly_credits = \"many\"", "catalog"),
        ];
        for (text, key) in cases {
            let e = Catalog::with_overlay(text).unwrap_err();
            assert!(e.key == key || e.message.contains(key), "{text}: {e}");
        }
    }
}
