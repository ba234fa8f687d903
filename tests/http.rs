//! The operator's own HTTP endpoints on loopback.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use meridian_operator::metrics::Metrics;
use meridian_operator::server::{self, Health};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(port: u16, path: &str) -> String {
    for _ in 0..100 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            return response;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server did not come up on port {port}");
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = Arc::new(Metrics::default());
    metrics.reconcile_started("CacheRegion");
    let health = Health::new(metrics);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        format!("127.0.0.1:{port}").parse().unwrap(),
        health.clone(),
        async move {
            let _ = stopped.await;
        },
    ));

    assert!(get(port, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(get(port, "/readyz").await.starts_with("HTTP/1.1 503"));
    health.ready.store(true, Ordering::Relaxed);
    assert!(get(port, "/readyz").await.starts_with("HTTP/1.1 200"));
    let metrics = get(port, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"));
    assert!(metrics.contains("meridian_operator_reconciles_total{kind=\"CacheRegion\"} 1"));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("graceful shutdown")
        .unwrap()
        .unwrap();
}
