//! Prometheus metrics. Labels carry only fixed, low-cardinality values (controller names,
//! error categories), never object names or error text.

use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Every metric family of the operator, registered in one [`Registry`].
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconcile_duration: HistogramVec,
    pub reconciliations: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    /// Cleanups (deletes) that could not finish yet, by controller.
    pub cleanup_blocked: IntCounterVec,
    /// Reconciles skipped because another installation of the operator owns the object.
    pub owned_elsewhere: IntCounterVec,
    pub leader: IntGauge,
    pub registry_request_duration: HistogramVec,
    pub copy_tasks: IntCounterVec,
    pub bytes_transferred: IntCounterVec,
    pub copy_tasks_running: IntGauge,
    pub notifications: IntCounterVec,
    pub replica_artifacts: IntCounterVec,
    pub replica_lag: prometheus::Gauge,
    pub sync_queue_depth: IntGauge,
    /// VM copy tasks now, by provider and phase.
    pub vm_copies: prometheus::IntGaugeVec,
    /// VM image shares now, by provider and state.
    pub vm_shares: prometheus::IntGaugeVec,
    /// Destinations with no Available copy of their object's current source, by provider and
    /// region.
    pub destination_outdated: prometheus::IntGaugeVec,
    /// The oldest of them: when its current source was found (Unix seconds); 0 when none.
    pub destination_outdated_since: prometheus::GaugeVec,
    /// VM copies waiting for a quota slot.
    pub copy_queue_depth: IntGauge,
    /// Shards: copies the process's quota admitted that found every shared slot taken.
    pub copy_slot_waits: IntCounterVec,
    /// VM copy task duration (start to Available), by provider.
    pub copy_duration: HistogramVec,
    /// Cloud image-service requests by provider, operation and outcome.
    pub provider_request_duration: HistogramVec,
    /// Exchanges for short-lived credentials (workload identity, assumed roles), by provider
    /// and outcome (`ok`, `refused`, `failed`).
    pub credential_exchanges: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The metric families of one registry: each defined and registered in one call.
struct Families(Registry);

impl Families {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.0.register(Box::new(c.clone())).expect("metric registered once");
        c
    }
    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }
    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::IntGaugeVec {
        self.register(prometheus::IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }
    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid metric"))
    }
    fn histogram(&self, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.register(HistogramVec::new(opts, labels).expect("valid metric"))
    }
}

/// The cloud providers' label values: every cloud of the registry.
fn cloud_labels() -> impl Iterator<Item = &'static str> {
    crate::image_replication::vm::providers::CLOUDS
        .iter()
        .map(|c| c.kind.as_str())
}

impl Metrics {
    /// Every metric, defined and registered, in the order `/metrics` shows them.
    pub fn new() -> Self {
        let f = Families(Registry::new_custom(Some("imgrep".into()), None).expect("static prefix"));
        let m = Self {
            vm_copies: f.gauges("vm_copies", "VM image copy tasks by provider and destination phase.", &["provider", "phase"]),
            vm_shares: f.gauges("vm_shares", "VM image shares with other accounts by provider and state.", &["provider", "state"]),
            destination_outdated: f.gauges(
                "destinations_outdated",
                "ImageReplication destinations whose region has no Available copy of the object's current source (a followed source or an oci tag moved on, or the first copy is not done), by provider and region.",
                &["provider", "region"],
            ),
            destination_outdated_since: f.register(
                prometheus::GaugeVec::new(
                    Opts::new(
                        "destinations_outdated_since_timestamp_seconds",
                        "The oldest outdated destination of the provider and region: when its current source was found (Unix seconds; time() minus it is the age); 0 when none is outdated.",
                    ),
                    &["provider", "region"],
                )
                .expect("valid metric"),
            ),
            copy_queue_depth: f.gauge("copy_queue_depth", "VM image copies waiting for a per-account quota slot."),
            copy_slot_waits: f.counter(
                "copy_slot_waits_total",
                "VM copies this process would have started that found every copy slot of the account held by the installation's other processes (shards), by provider.",
                &["provider"],
            ),
            copy_duration: f.histogram(
                "copy_task_duration_seconds",
                "Time from start to Available of VM image copies, by provider.",
                &[1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0],
                &["provider"],
            ),
            provider_request_duration: f.histogram(
                "provider_request_duration_seconds",
                "Image-service requests by provider, operation and outcome.",
                &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
                &["provider", "operation", "outcome"],
            ),
            credential_exchanges: f.counter(
                "credential_exchanges_total",
                "Exchanges at a cloud's security token service for short-lived credentials (workload identity, assumed roles), by provider and outcome (ok, refused, failed).",
                &["provider", "outcome"],
            ),
            reconcile_duration: f.histogram(
                "reconcile_duration_seconds",
                "Time spent in one reconcile, by controller.",
                &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
                &["controller"],
            ),
            reconciliations: f.counter("reconciliations_total", "Reconciles run, by controller.", &["controller"]),
            reconcile_errors: f.counter(
                "reconcile_errors_total",
                "Reconciles that failed, by controller and error category.",
                &["controller", "category"],
            ),
            cleanup_blocked: f.counter(
                "cleanup_blocked_total",
                "Deletes whose cleanup could not finish yet (retried with backoff), by controller.",
                &["controller"],
            ),
            owned_elsewhere: f.counter(
                "objects_owned_elsewhere_total",
                "Reconciles left alone because the object names another installation of the operator, by controller.",
                &["controller"],
            ),
            leader: f.gauge("leader", "1 while this instance holds the leader lease (or runs without election)."),
            registry_request_duration: f.histogram(
                "registry_request_duration_seconds",
                "Registry API requests by operation and outcome.",
                &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
                &["operation", "outcome"],
            ),
            copy_tasks: f.counter(
                "copy_tasks_total",
                "Finished copy tasks by provider and outcome (copied, up_to_date, failed).",
                &["provider", "outcome"],
            ),
            bytes_transferred: f.counter("bytes_transferred_total", "Bytes uploaded to destinations, by provider.", &["provider"]),
            copy_tasks_running: f.gauge("copy_tasks_running", "Copy tasks running now."),
            notifications: f.counter("notifications_total", "Registry notifications received, by outcome.", &["outcome"]),
            replica_artifacts: f.counter(
                "replica_artifacts_total",
                "Replica artifacts by result (copied, deleted, failed, conflict).",
                &["result"],
            ),
            replica_lag: f.register(
                prometheus::Gauge::new(
                    "replica_lag_seconds",
                    "Age of the oldest change on a primary not yet applied to its replica (largest over all ReplicaInstances).",
                )
                .expect("valid metric"),
            ),
            sync_queue_depth: f.gauge("sync_queue_depth", "Artifacts waiting to be transferred by running syncs."),
            registry: f.0,
        };
        m.seed();
        m
    }

    /// Counters start at zero for their known label values, so that dashboards and alerts
    /// (rate, increase, absent) see every series from the first scrape. The values come from
    /// where they are made (the API's provider kinds, the error categories), not a copy here.
    fn seed(&self) {
        for provider in cloud_labels() {
            self.copy_slot_waits.with_label_values(&[provider]);
            self.copy_duration.with_label_values(&[provider]);
        }
        for cloud in crate::image_replication::vm::providers::CLOUDS
            .iter()
            .filter(|c| c.identity.is_some())
        {
            for outcome in ["ok", "refused", "failed"] {
                self.credential_exchanges
                    .with_label_values(&[cloud.kind.as_str(), outcome]);
            }
        }
        for controller in ["image_replication", "replica_instance"] {
            self.reconciliations.with_label_values(&[controller]);
            self.cleanup_blocked.with_label_values(&[controller]);
            self.owned_elsewhere.with_label_values(&[controller]);
            for category in crate::Error::CATEGORIES {
                self.reconcile_errors.with_label_values(&[controller, category]);
            }
        }
        for outcome in ["copied", "up_to_date", "failed"] {
            self.copy_tasks.with_label_values(&["oci", outcome]);
        }
        let streaming = crate::image_replication::vm::providers::CLOUDS
            .iter()
            .filter(|c| c.moves_bytes)
            .map(|c| c.kind.as_str());
        for provider in ["oci", "oci_replica"].into_iter().chain(streaming) {
            self.bytes_transferred.with_label_values(&[provider]);
        }
        for result in ["copied", "deleted", "failed", "conflict"] {
            self.replica_artifacts.with_label_values(&[result]);
        }
        for outcome in ["accepted", "not_configured", "standby", "unauthorized", "bad_payload"] {
            self.notifications.with_label_values(&[outcome]);
        }
    }

    /// An observer for the registry client that feeds `registry_request_duration_seconds`.
    pub fn registry_observer(&self) -> crate::oci::client::Observer {
        let h = self.registry_request_duration.clone();
        std::sync::Arc::new(move |op: &'static str, outcome: &'static str, secs: f64| {
            h.with_label_values(&[&op.replace(' ', "_"), outcome]).observe(secs);
        })
    }

    /// Start timing a reconcile; the duration is recorded when the timer is dropped.
    pub fn reconcile_timer(&self, controller: &'static str) -> ReconcileTimer {
        self.reconciliations.with_label_values(&[controller]).inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.reconcile_duration.with_label_values(&[controller]),
        }
    }

    /// Count a failed reconcile.
    pub fn reconcile_failure(&self, controller: &'static str, category: &'static str) {
        self.reconcile_errors.with_label_values(&[controller, category]).inc();
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("text encoding does not fail");
        out
    }
}

/// Records the elapsed time of a reconcile on drop.
pub struct ReconcileTimer {
    start: Instant,
    histogram: prometheus::Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_and_errors_show_up_in_the_text_format() {
        let m = Metrics::new();
        drop(m.reconcile_timer("image_replication"));
        m.reconcile_failure("image_replication", "kube");
        let text = m.render();
        assert!(
            text.contains("imgrep_reconciliations_total{controller=\"image_replication\"} 1"),
            "{text}"
        );
        assert!(text.contains("imgrep_reconcile_duration_seconds_count{controller=\"image_replication\"} 1"));
        assert!(text.contains("imgrep_reconcile_errors_total{category=\"kube\",controller=\"image_replication\"} 1"));
    }

    /// The freshness gauges sum what the objects report per provider and region (the oldest
    /// since-timestamp), follow a changed report, and drop an object that is gone.
    #[test]
    fn freshness_sums_the_objects_reports() {
        let (m, f) = (Metrics::new(), Freshness::default());
        let line = |what: &str, region: &str| {
            let text = m.render();
            let head = format!("imgrep_{what}{{provider=\"aws\",region=\"{region}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&head).map(String::from))
                .unwrap_or_default()
        };
        f.record(&m, "ns/a", "aws", vec![("r1".into(), Some(100)), ("r2".into(), None)]);
        f.record(&m, "ns/b", "aws", vec![("r1".into(), Some(50))]);
        assert_eq!(
            (line("destinations_outdated", "r1"), line("destinations_outdated", "r2")),
            ("2".into(), "0".into())
        );
        assert_eq!(line("destinations_outdated_since_timestamp_seconds", "r1"), "50");
        f.record(&m, "ns/b", "aws", vec![("r1".into(), None)]);
        assert_eq!(line("destinations_outdated", "r1"), "1");
        assert_eq!(line("destinations_outdated_since_timestamp_seconds", "r1"), "100");
        f.forget(&m, "ns/a");
        assert_eq!(line("destinations_outdated", "r1"), "0");
        assert_eq!(line("destinations_outdated_since_timestamp_seconds", "r1"), "0");
    }
}

/// The freshness gauges (`imgrep_destinations_outdated` and the oldest since-timestamp) per
/// provider and region, summed over the ImageReplications an engine reconciles (object names
/// never become labels): what each object last reported, and per provider and region how many
/// outdated destinations wait since when — kept up to date as objects report, so a report costs
/// its own regions only, and an unchanged one nothing.
#[derive(Default)]
pub struct Freshness {
    state: std::sync::Mutex<FreshState>,
}

/// One object's provider and, per region, since when it is outdated (`None`: up to date).
type Reported = (String, Vec<(String, Option<i64>)>);

#[derive(Default)]
struct FreshState {
    objects: std::collections::HashMap<String, Reported>,
    /// (provider, region) -> since -> how many outdated destinations wait since then.
    outdated: std::collections::HashMap<(String, String), std::collections::BTreeMap<i64, usize>>,
}

impl FreshState {
    fn count(&mut self, provider: &str, rs: &[(String, Option<i64>)], add: bool) {
        for (region, since) in rs {
            let waits = self.outdated.entry((provider.to_string(), region.clone())).or_default();
            let Some(t) = since else { continue };
            if add {
                *waits.entry(*t).or_default() += 1;
            } else if let Some(n) = waits.get_mut(t) {
                *n -= 1;
                if *n == 0 {
                    waits.remove(t);
                }
            }
        }
    }

    fn publish(&self, m: &Metrics, provider: &str, rs: &[(String, Option<i64>)]) {
        for (region, _) in rs {
            let Some(waits) = self.outdated.get(&(provider.to_string(), region.clone())) else {
                continue;
            };
            m.destination_outdated
                .with_label_values(&[provider, region])
                .set(waits.values().sum::<usize>() as i64);
            m.destination_outdated_since
                .with_label_values(&[provider, region])
                .set(waits.keys().next().copied().unwrap_or(0) as f64);
        }
    }
}

impl Freshness {
    /// What the object now reports; the gauges of the regions it reported, before or now, follow.
    pub fn record(&self, m: &Metrics, key: &str, provider: &str, now: Vec<(String, Option<i64>)>) {
        let mut st = self.state.lock().expect("freshness lock");
        let report = (provider.to_string(), now);
        if st.objects.get(key) == Some(&report) {
            return;
        }
        let before = st.objects.insert(key.to_string(), report.clone());
        if let Some((p, rs)) = &before {
            st.count(p, rs, false);
        }
        st.count(provider, &report.1, true);
        if let Some((p, rs)) = &before {
            st.publish(m, p, rs);
        }
        st.publish(m, provider, &report.1);
    }

    /// The object is gone from this process.
    pub fn forget(&self, m: &Metrics, key: &str) {
        let mut st = self.state.lock().expect("freshness lock");
        if let Some((p, rs)) = st.objects.remove(key) {
            st.count(&p, &rs, false);
            st.publish(m, &p, &rs);
        }
    }
}
