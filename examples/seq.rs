use billing_worker::ledger::{Op, Source};
use billing_worker::store::*;
use std::time::Instant;
#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let url = std::env::args().nth(1).unwrap();
    let store = Store::open(&url).await.unwrap();
    store
        .execute(Request {
            account: "a".into(),
            op: Op::Grant { lot_id: "g".into(), source: Source::Adjustment, credits: 1_000_000 },
            cause: "seed".into(),
            key: None,
            on_missing: OnMissing::Create,
            now: 1_700_000_000,
        })
        .await
        .unwrap();
    let t = Instant::now();
    for i in 0..200 {
        let t1 = Instant::now();
        store
            .execute(Request {
                account: "a".into(),
                op: Op::Debit { key: format!("k{i}"), credits: 1, user_id: None, operation: None },
                cause: "x".into(),
                key: None,
                on_missing: OnMissing::Refuse,
                now: 1_700_000_000,
            })
            .await
            .unwrap();
        let w = t1.elapsed();
        let t2 = Instant::now();
        store.account("a", 1_700_000_000).await.unwrap();
        if i % 40 == 0 {
            println!("write {:?} read {:?}", w, t2.elapsed());
        }
    }
    println!("{:?} per op", t.elapsed() / 200);
}
