use billing_worker::ledger::{Op, Source};
use billing_worker::store::*;
use std::time::Instant;

#[tokio::main]
async fn main() {
    let url = std::env::args().nth(1).unwrap();
    let conc: usize = std::env::args().nth(2).unwrap_or("16".into()).parse().unwrap();
    let hot = std::env::args().nth(3).is_some();
    let mut opts = StoreOptions::default();
    if let Ok(g) = std::env::var("BW_GATHER_US") {
        opts.gather = std::time::Duration::from_micros(g.parse().unwrap());
    }
    if let Ok(l) = std::env::var("BW_LANES") {
        opts.lanes = l.parse().unwrap();
    }
    let store = Store::open_with(&url, opts).await.unwrap();
    let n_acc = if hot { 1 } else { 1000 };
    let mut pend = vec![];
    for a in 0..n_acc {
        pend.push(store.execute(Request {
            account: format!("a{a}"),
            op: Op::Grant { lot_id: "g".into(), source: Source::Adjustment, credits: 1_000_000 },
            cause: "seed".into(),
            key: None,
            on_missing: OnMissing::Create,
            now: 1_700_000_000,
        }));
    }
    for p in pend {
        p.await.unwrap();
    }
    let t = Instant::now();
    let mut tasks = vec![];
    for c in 0..conc {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            let mut i = c as u64;
            while t.elapsed().as_secs() < 5 {
                i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let a = if hot { 0 } else { (i >> 33) % 1000 };
                let key = format!("k{c}-{n}");
                let r = store
                    .execute(Request {
                        account: format!("a{a}"),
                        op: Op::Debit {
                            key: key.clone(),
                            credits: 1,
                            user_id: Some("u".into()),
                            operation: Some("chat.message".into()),
                        },
                        cause: format!("debit:{key}"),
                        key: Some(IdempotencyKey { key: format!("debit:{key}"), fingerprint: "x".into() }),
                        on_missing: OnMissing::Refuse,
                        now: 1_700_000_000,
                    })
                    .await;
                r.unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    println!("{} debits/s", total as f64 / t.elapsed().as_secs_f64());
}
