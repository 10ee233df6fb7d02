//! Thin entry point: logging, then the command line.

#[tokio::main]
async fn main() {
    let level = match std::env::var("RUST_LOG") {
        Err(_) => tracing::Level::INFO,
        Ok(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("RUST_LOG: expected error, warn, info, debug or trace, got {v:?}; using info");
            tracing::Level::INFO
        }),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_max_level(level).with_ansi(ansi).with_writer(std::io::stderr).init();
    std::process::exit(billing_worker::cli::run().await);
}
