//! What a Stripe price means: a plan (with its monthly credits and rollover cap) or a credit package, by the
//! catalog (price id or lookup key) or by the price's (or its product's) own metadata.

use super::event::Price;
use crate::catalog::{Catalog, MAX_CREDITS, PriceUse};
use crate::ledger::{Credits, PlanTerms};

/// Catalog and metadata numbers are checked to lie in `0..=MAX_CREDITS` before they get here.
fn credits(n: i64) -> Credits {
    Credits::new(n).unwrap_or_default()
}

/// The plan terms a subscription price stands for.
pub fn plan_terms(catalog: &Catalog, price: &Price) -> Option<PlanTerms> {
    let named = catalog_use(catalog, price).and_then(|u| match u {
        PriceUse::Plan(p) => Some(p),
        PriceUse::Package(_) => None,
    });
    let plan = named.or_else(|| price.meta("credits_plan"));
    let monthly =
        price.meta("credits_monthly").and_then(|v| v.parse::<i64>().ok()).filter(|v| (0..=MAX_CREDITS).contains(v));
    let cap = price
        .meta("credits_rollover_cap")
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|v| (0..=MAX_CREDITS).contains(v));
    match (plan, monthly) {
        // Enterprise (or any price with its own numbers): the price's metadata sets the allocation.
        (plan, Some(monthly)) => {
            let plan = plan.unwrap_or_else(|| "enterprise".into());
            let cap = cap.or_else(|| catalog.plans.get(&plan).map(|p| p.rollover_cap)).unwrap_or(0);
            Some(PlanTerms { plan, monthly: credits(monthly), cap: credits(cap) })
        }
        (Some(plan), None) => {
            let p = catalog.plans.get(&plan)?;
            Some(PlanTerms { plan, monthly: credits(p.monthly_credits), cap: credits(cap.unwrap_or(p.rollover_cap)) })
        }
        (None, None) => None,
    }
}

/// The package (name, credits each) a one-off price stands for.
pub fn package(catalog: &Catalog, price: &Price) -> Option<(String, i64)> {
    let name = match catalog_use(catalog, price) {
        Some(PriceUse::Package(p)) => Some(p),
        _ => price.meta("credits_package"),
    }?;
    catalog.packages.get(&name).map(|p| (name, p.credits))
}

/// The catalog's mapping of a bare price id (an invoice line that carries no price object).
pub fn plan_terms_by_id(catalog: &Catalog, id: &str) -> Option<PlanTerms> {
    plan_terms(catalog, &Price { id: id.into(), ..Price::default() })
}

fn catalog_use(catalog: &Catalog, price: &Price) -> Option<PriceUse> {
    catalog.price(&price.id).or_else(|| price.lookup_key.as_deref().and_then(|k| catalog.price(k)))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::domain::test_values::{at, cr};
    use serde_json::json;

    fn price(v: serde_json::Value) -> Price {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn maps_by_id_lookup_key_and_metadata() {
        let c = Catalog::with_overlay(
            "[plans.basic]\nmonthly_credits = 20\nrollover_cap = 40\nstripe_prices = [\"price_b\", \"basic_monthly\"]",
        )
        .unwrap();
        assert_eq!(plan_terms(&c, &price(json!({"id": "price_b"}))).unwrap().monthly, 20);
        assert_eq!(
            plan_terms(&c, &price(json!({"id": "price_x", "lookup_key": "basic_monthly"}))).unwrap().plan,
            "basic"
        );
        let pro = price(json!({"id": "price_y", "metadata": {"credits_plan": "pro"}}));
        assert_eq!(plan_terms(&c, &pro), Some(PlanTerms { plan: "pro".into(), monthly: cr(50), cap: cr(100) }));
        let ent =
            price(json!({"id": "price_e", "metadata": {"credits_monthly": "1000", "credits_rollover_cap": "2500"}}));
        assert_eq!(
            plan_terms(&c, &ent),
            Some(PlanTerms { plan: "enterprise".into(), monthly: cr(1000), cap: cr(2500) })
        );
        let via_product =
            price(json!({"id": "price_p", "product": {"id": "prod", "metadata": {"credits_plan": "business"}}}));
        assert_eq!(plan_terms(&c, &via_product).unwrap().monthly, 150);
        assert_eq!(plan_terms(&c, &price(json!({"id": "price_unknown"}))), None);
        assert_eq!(plan_terms(&c, &price(json!({"id": "p", "metadata": {"credits_plan": "platinum"}}))), None);
        let pkg = price(json!({"id": "price_pkg", "metadata": {"credits_package": "credits_100"}}));
        assert_eq!(package(&c, &pkg), Some(("credits_100".into(), 100)));
        assert_eq!(package(&c, &price(json!({"id": "credits_25"}))), Some(("credits_25".into(), 25)));
    }
}
