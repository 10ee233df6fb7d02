use std::time::Instant;
#[tokio::main]
async fn main() {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect("postgres://postgres@127.0.0.1:5432/wb")
        .await
        .unwrap();
    let mut c = pool.acquire().await.unwrap();
    for _ in 0..100 {
        sqlx::query("SELECT 1").execute(&mut *c).await.unwrap();
    }
    let t = Instant::now();
    for _ in 0..2000 {
        sqlx::query("SELECT 1").execute(&mut *c).await.unwrap();
    }
    println!("select 1: {:?} per rt", t.elapsed() / 2000);
    let t = Instant::now();
    for _ in 0..2000 {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
    }
    println!("begin+select+commit: {:?}", t.elapsed() / 2000);
    let t = Instant::now();
    for i in 0..2000 {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO effects (account_id, key, request, response, created_at) VALUES ('a0', $1, 'x', 'y', 1)",
        )
        .bind(format!("rt{i}-{}", t.elapsed().as_nanos()))
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    println!("begin+insert+commit: {:?}", t.elapsed() / 2000);
}
