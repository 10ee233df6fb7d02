//! Thin entry point: logging, then the command line.

#[tokio::main]
async fn main() {
    if let Err(e) = billing_worker::logging::init_from_env() {
        eprintln!("configuration error: {e}");
        std::process::exit(2);
    }
    std::process::exit(billing_worker::cli::run().await);
}
