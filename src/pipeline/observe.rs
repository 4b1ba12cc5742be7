//! `run --metrics-addr`: the run's metrics in Prometheus's text format on
//! `/metrics`, and `/health`, served over HTTP while the run goes on.
//!
//! The stages count with the `metrics` crate's macros wherever the figure
//! is made; without `--metrics-addr` no recorder is installed and those
//! calls do nothing. The names and what they count are listed in
//! `docs/OPERATIONS.md`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::partition::AbortOnDrop;
use crate::error::{Error, Result};

/// The metrics endpoint of this process; it stops serving when dropped.
pub struct Exporter {
    addr: SocketAddr,
    _serving: AbortOnDrop,
    _upkeep: AbortOnDrop,
}

fn respond(path: &str, handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    let (status, kind, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            handle.render(),
        ),
        "/health" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: /metrics or /health\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(kind),
    );
    response
}

/// Install the process's metrics recorder (labelled with the job's name)
/// and serve it on `addr`. Port 0 takes a free port: see
/// [`Exporter::addr`].
pub async fn serve(addr: SocketAddr, job: &str) -> Result<Exporter> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        Error::config(
            "--metrics-addr",
            format!("cannot serve the metrics on {addr}: {e}"),
        )
    })?;
    let addr = listener.local_addr().unwrap_or(addr);
    let handle = PrometheusBuilder::new()
        .add_global_label("shiftload_job", job)
        .install_recorder()
        .map_err(|e| Error::Internal(format!("the metrics recorder: {e}")))?;
    let kept = handle.clone();
    let upkeep = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            kept.run_upkeep();
        }
    });
    let serving = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handle = handle.clone();
            let service = hyper::service::service_fn(move |request| {
                let response = respond(request.uri().path(), &handle);
                async move { Ok::<_, Infallible>(response) }
            });
            tokio::spawn(async move {
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "metrics connection");
                }
            });
        }
    });
    tracing::info!(%addr, "serving /metrics and /health");
    Ok(Exporter {
        addr,
        _serving: AbortOnDrop(serving),
        _upkeep: AbortOnDrop(upkeep),
    })
}

impl Exporter {
    /// Where the metrics are served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Keep serving for `time` after the run (for the last scrape), or
    /// until `cancel` (a signal).
    pub async fn linger(&self, time: Duration, cancel: &CancellationToken) {
        tokio::select! {
            _ = tokio::time::sleep(time) => {}
            _ = cancel.cancelled() => {}
        }
    }
}
