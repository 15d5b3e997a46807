//! The process around the controllers: the HTTP endpoints (`/metrics`, `/healthz`, `/readyz`,
//! `/notifications`), leader election, the Prometheus metrics and logging.

pub mod http;
pub mod leader;
pub mod metrics;
pub mod telemetry;
