//! `amqps://` as an operator meets it: through a TLS port to the broker it connects and consumes (the system's
//! roots, or the bundle `SSL_CERT_FILE` names); to a port without TLS, or to a certificate nobody trusts, the
//! start fails at once with a message that says so, instead of a reconnect loop that says nothing useful.
//!
//! The local RabbitMQ has no TLS listener, so the test puts one in front of it: a relay that ends TLS with a
//! certificate made here by `openssl` and passes the bytes on to 127.0.0.1:5672.

use crate::common::amqp::cleanup;
use crate::common::proc::{Proc, free_port, log_dir};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn openssl(args: &[&str], dir: &Path) {
    let out =
        Command::new("openssl").args(args).current_dir(dir).output().expect("openssl makes the test certificates");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A certificate authority (`ca.pem`) and a certificate it signed for `localhost` (`cert.pem`, `key.pem`), in
/// `dir`; returns the paths of the authority, the certificate and its key.
fn certificates(dir: &Path) -> [std::path::PathBuf; 3] {
    let rsa = ["-newkey", "rsa:2048", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &rsa,
            &["-days", "1", "-subj", "/CN=billing test CA", "-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
        dir,
    );
    openssl(&[&["req"][..], &rsa, &["-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "leaf.csr"]].concat(), dir);
    std::fs::write(dir.join("leaf.ext"), "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n").unwrap();
    openssl(
        &["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1"]
            .into_iter()
            .chain(["-extfile", "leaf.ext", "-out", "cert.pem"])
            .collect::<Vec<_>>(),
        dir,
    );
    [dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem")]
}

/// A TLS listener on a free port that relays each connection to the local RabbitMQ; counts finished handshakes.
async fn relay(cert: &Path, key: &Path) -> (u16, Arc<AtomicUsize>) {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let certs = vec![CertificateDer::from_pem_file(cert).unwrap()];
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config =
        tokio_rustls::rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                counted.fetch_add(1, Ordering::SeqCst);
                let Ok(mut broker) = tokio::net::TcpStream::connect("127.0.0.1:5672").await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
            });
        }
    });
    (port, handshakes)
}

fn env<'a>(db: &'a str, url: &'a str, prefix: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("DATABASE_URL", db),
        ("AMQP_URL", url),
        ("BILLING_AMQP_PREFIX", prefix),
        ("BILLING_RETRY_DELAYS_MS", "300,600"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_through_a_tls_port_connects_and_consumes() {
    let dir = log_dir("amqps");
    let [ca, cert, key] = certificates(&dir);
    let (port, handshakes) = relay(&cert, &key).await;
    let db = format!("sqlite:{}", dir.join("b.db").display());
    let prefix = crate::common::amqp::prefix();
    let url = format!("amqps://guest:guest@localhost:{port}/%2f");
    let mut vars = env(&db, &url, &prefix);
    let bundle = ca.display().to_string();
    vars.push(("SSL_CERT_FILE", &bundle));
    let w = Proc::spawn(free_port(), &vars, &dir.join("worker.log"));
    w.ready(true).await; // `broker: up`: declared its queues and consumes, over TLS
    assert!(handshakes.load(Ordering::SeqCst) >= 1, "the connection went through the TLS relay");
    drop(w);
    cleanup(&prefix).await;
}

/// What the start prints and its exit code, for a worker that must refuse to start.
async fn refused_start(vars: &[(&str, &str)], dir: &Path) -> (Option<i32>, String) {
    let log = dir.join("refused.log");
    let mut w = Proc::spawn(free_port(), vars, &log);
    let status = w.exited(Duration::from_secs(15)).await.expect("the start fails instead of retrying for ever");
    (status.code(), std::fs::read_to_string(&log).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_to_a_port_without_tls_stops_the_start_with_a_clear_message() {
    let dir = log_dir("amqps_plain");
    let db = format!("sqlite:{}", dir.join("b.db").display());
    let vars = env(&db, "amqps://guest:mq-secret@127.0.0.1:5672/%2f", "unused");
    let (code, log) = refused_start(&vars, &dir).await;
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("the TLS handshake with the broker failed"), "{log}");
    assert!(log.contains("RabbitMQ's is 5671"), "{log}");
    assert!(!log.contains("mq-secret"), "no password in the message: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_to_a_certificate_nobody_trusts_stops_the_start() {
    let dir = log_dir("amqps_untrusted");
    let [_, cert, key] = certificates(&dir);
    let (port, _) = relay(&cert, &key).await;
    let db = format!("sqlite:{}", dir.join("b.db").display());
    let url = format!("amqps://guest:guest@localhost:{port}/%2f");
    let (code, log) = refused_start(&env(&db, &url, "unused"), &dir).await;
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("the TLS handshake with the broker failed (invalid peer certificate"), "{log}");
}
