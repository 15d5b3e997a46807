//! `image-replication-operator`: the operator (`run`) and the CRD generator (`crdgen`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, CustomResourceExt};
use tokio::sync::watch;
use tracing::{error, info, warn};

use image_replication_operator::api::{ImageReplication, ReplicaInstance};
use image_replication_operator::controller::{self, Context};
use image_replication_operator::image_replication::vm::providers;
use image_replication_operator::server::http::{self, Health};
use image_replication_operator::server::leader::{Elector, LeaseConfig, wait_true};
use image_replication_operator::server::metrics::Metrics;
use image_replication_operator::server::telemetry::{self, LogFormat};
use image_replication_operator::{crdgen, egress};

#[derive(Parser)]
#[command(
    name = "image-replication-operator",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("GIT_REVISION"), ")"),
    about = "Keeps VM and container images present in every region where they are needed"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator against the cluster of the kubeconfig or the in-cluster config.
    Run(RunArgs),
    /// Reconcile manifests from files with no cluster; exit 0 only when every object is Ready.
    Replicate {
        /// Files with ImageReplication, ReplicaInstance and Secret manifests.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Copy attempts per destination before giving up.
        #[arg(long, default_value_t = 3)]
        attempts: i32,
        /// Apply an egress policy (by default `replicate` acts for whoever runs it and may
        /// connect anywhere): allowed registry hosts, comma-separated rules.
        #[arg(long)]
        egress_registry_hosts: Option<String>,
        /// With an egress policy: allowed cloud endpoint hosts.
        #[arg(long)]
        egress_cloud_hosts: Option<String>,
        /// Where blob locations are kept between runs, so that a blob already in the
        /// destination registry is mounted, not uploaded again (default:
        /// $XDG_CACHE_HOME or ~/.cache, image-replication-operator/blob-locations.json).
        #[arg(long, env = "IMGREP_BLOB_CACHE")]
        blob_cache: Option<PathBuf>,
        /// Keep no blob locations between runs.
        #[arg(long, conflicts_with = "blob_cache")]
        no_blob_cache: bool,
    },
    /// Print both CRDs as YAML, or write them as files into directories.
    Crdgen {
        /// Write one file per CRD into each of these directories instead of printing.
        #[arg(long = "out-dir")]
        out_dirs: Vec<PathBuf>,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Only one instance reconciles at a time, elected through a Lease.
    #[arg(long, env = "LEADER_ELECT")]
    leader_elect: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "image-replication-operator")]
    lease_name: String,
    /// Namespace of the leader Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Identity of this instance in the Lease and in Events (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Name of this installation, written on every object it reconciles (annotation
    /// replication.imageops.io/installation); objects naming another installation are left
    /// alone. Default: <lease namespace>/<lease name>.
    #[arg(long, env = "INSTALLATION")]
    installation: Option<String>,
    /// Take over objects that name another installation (moving objects between
    /// installations; the other one must be gone).
    #[arg(long, env = "ADOPT_OBJECTS")]
    adopt_objects: bool,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Reconcile only the objects (of both kinds) with these labels, e.g.
    /// `replication.imageops.io/shard in (a)` (a shard; README: Shards). An object whose labels
    /// stop matching is let go: its copies in the clouds go on, the process's oci copies of it
    /// are cancelled, and the process that now matches takes it over. A shard shares the cloud
    /// copy quotas with the installation's other processes (copy slots as Leases in the
    /// operator's namespace).
    #[arg(long, env = "WATCH_LABEL_SELECTOR")]
    watch_label_selector: Option<String>,
    /// Objects reconciled at once per controller.
    #[arg(long, default_value_t = 8)]
    concurrency: u16,
    /// Seconds between drift checks of an Available copy.
    #[arg(long, env = "RESYNC_SECONDS", default_value_t = 300)]
    resync_seconds: u64,
    #[command(flatten)]
    vm: VmArgs,
    #[command(flatten)]
    egress: EgressArgs,
    /// Seconds to wait for the CRDs to be established before giving up.
    #[arg(long, default_value_t = 120)]
    crd_wait_seconds: u64,
}

/// Where the operator may connect (README, Security). Rules: `*`, `*.suffix` or an exact host,
/// each with an optional `:port`. Loopback, link-local, metadata and the API server's addresses
/// are refused unless a rule names them exactly.
#[derive(Args, Clone)]
struct EgressArgs {
    /// Registry hosts specs may name (destinations, source references, primaries, replicas) and
    /// registries may send the operator to (token realms, redirects).
    #[arg(long, env = "EGRESS_REGISTRY_HOSTS", default_value = egress::DEFAULT_REGISTRY_HOSTS)]
    egress_registry_hosts: String,
    /// Cloud API endpoint hosts (provider.endpoint, OpenStack authUrl and catalog, Secrets'
    /// endpoints). OpenStack deployments must be added here.
    #[arg(long, env = "EGRESS_CLOUD_HOSTS", default_value_t = providers::default_cloud_hosts())]
    egress_cloud_hosts: String,
}

/// Tuning of VM image copies.
#[derive(Args, Clone)]
struct VmArgs {
    /// Largest OpenStack image the operator copies (it streams every byte itself).
    #[arg(long, env = "OPENSTACK_MAX_IMAGE_BYTES", default_value_t = 1 << 40)]
    openstack_max_image_bytes: u64,
    /// OpenStack disk formats refused for cross-region copies (comma-separated; empty: none).
    #[arg(long, env = "OPENSTACK_REFUSED_DISK_FORMATS", default_value = "iso")]
    openstack_refused_disk_formats: String,
    /// First poll interval of a copy task; doubles while nothing changes.
    #[arg(long, default_value_t = 5)]
    poll_min_seconds: u64,
    /// Longest poll interval of a copy task.
    #[arg(long, default_value_t = 60)]
    poll_max_seconds: u64,
}

impl VmArgs {
    fn settings(
        &self,
        resync: Duration,
        max_attempts: i32,
    ) -> image_replication_operator::image_replication::vm::engine::Settings {
        image_replication_operator::image_replication::vm::engine::Settings {
            limits: image_replication_operator::image_replication::vm::rules::Limits {
                openstack_max_bytes: self.openstack_max_image_bytes,
                openstack_refused_formats: self
                    .openstack_refused_disk_formats
                    .split(',')
                    .map(|f| f.trim().to_string())
                    .filter(|f| !f.is_empty())
                    .collect(),
            },
            max_attempts,
            resync,
            poll_min: Duration::from_secs(self.poll_min_seconds.max(1)),
            poll_max: Duration::from_secs(self.poll_max_seconds.max(self.poll_min_seconds).max(1)),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crdgen { out_dirs } => crdgen_cmd(out_dirs),
        Command::Run(args) => run(args).await,
        Command::Replicate {
            files,
            attempts,
            egress_registry_hosts,
            egress_cloud_hosts,
            blob_cache,
            no_blob_cache,
        } => {
            if egress_registry_hosts.is_some() || egress_cloud_hosts.is_some() {
                let policy = egress::Policy::from_lists(
                    egress_registry_hosts
                        .as_deref()
                        .unwrap_or(egress::DEFAULT_REGISTRY_HOSTS),
                    &egress_cloud_hosts
                        .clone()
                        .unwrap_or_else(providers::default_cloud_hosts),
                )
                .map_err(anyhow::Error::msg)?;
                egress::install(policy);
            }
            let manifests = image_replication_operator::replicate::load(&files).map_err(anyhow::Error::msg)?;
            let blob_cache = if no_blob_cache {
                None
            } else {
                blob_cache.or_else(image_replication_operator::replicate::default_blob_cache)
            };
            let opts = image_replication_operator::replicate::Options { attempts, blob_cache };
            if image_replication_operator::replicate::run(manifests, &opts, &mut std::io::stdout()).await {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
    }
}

fn crdgen_cmd(out_dirs: Vec<PathBuf>) -> anyhow::Result<()> {
    if out_dirs.is_empty() {
        print!("{}", crdgen::all_yaml());
        return Ok(());
    }
    for dir in out_dirs {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for crd in crdgen::crds() {
            let path = dir.join(crdgen::file_name(&crd));
            std::fs::write(&path, crdgen::to_yaml(&crd)).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

async fn shutdown_signal(tx: watch::Sender<bool>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received; shutting down"),
        _ = tokio::signal::ctrl_c() => info!("interrupt received; shutting down"),
    }
    let _ = tx.send(true);
}

async fn wait_for_crds(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in [ImageReplication::crd_name(), ReplicaInstance::crd_name()] {
        info!(crd = name, "waiting for CRD to be established");
        match tokio::time::timeout(
            timeout,
            await_condition(api.clone(), name, conditions::is_crd_established()),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("watching CRD {name}: {e}"),
            Err(_) => bail!(
                "CRD {name} not established after {}s; install the CRDs first (crds/ or the Helm chart)",
                timeout.as_secs()
            ),
        }
    }
    Ok(())
}

/// The controllers' context from the flags.
fn context(
    args: &RunArgs,
    client: Client,
    identity: &str,
    metrics: &Metrics,
    notifications: &Arc<image_replication_operator::replica_instance::oci::notify::Notifications>,
) -> Context {
    let resync = Duration::from_secs(args.resync_seconds.max(1));
    let installation = args
        .installation
        .clone()
        .unwrap_or_else(|| format!("{}/{}", args.lease_namespace, args.lease_name));
    // A shard shares the cloud copy quotas with the installation's other processes.
    let slots = args.watch_label_selector.as_ref().map(|_| {
        Arc::new(image_replication_operator::controller::slots::KubeSlots::new(
            client.clone(),
            &args.lease_namespace,
            &installation,
        )) as Arc<dyn image_replication_operator::image_replication::vm::slots::Slots>
    });
    let settings = image_replication_operator::controller::Settings {
        resync,
        vm: args.vm.settings(resync, image_replication_operator::plan::MAX_ATTEMPTS),
        notifications: notifications.clone(),
        slots,
    };
    Context::new(client, identity, metrics.clone(), settings).with_installation(&installation, args.adopt_objects)
}

/// The egress policy: the allow lists, and the API server (the configured one and the
/// in-cluster Service) always allowed.
fn egress_policy(lists: &EgressArgs, config: &kube::Config) -> anyhow::Result<egress::Policy> {
    let mut policy = egress::Policy::from_lists(&lists.egress_registry_hosts, &lists.egress_cloud_hosts)
        .map_err(anyhow::Error::msg)?;
    if let Some(host) = config.cluster_url.host() {
        let port = config.cluster_url.port_u16().unwrap_or(443);
        policy = policy.with_api_server(host, port);
    }
    if let (Ok(h), Ok(p)) = (
        std::env::var("KUBERNETES_SERVICE_HOST"),
        std::env::var("KUBERNETES_SERVICE_PORT").map(|p| p.parse::<u16>().unwrap_or(443)),
    ) {
        policy = policy.with_api_server(&h, p);
    }
    Ok(policy)
}

/// Serve /metrics, /healthz, /readyz (and the notification endpoint) until `stop` turns true.
async fn serve_http(
    addr: std::net::SocketAddr,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    Ok(tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                wait_true(&mut stop).await;
            })
            .into_future(),
    ))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("image-replication-operator-{}", std::process::id()));
    let metrics = Metrics::new();
    let health = Arc::new(Health::default());
    let notifications = Arc::new(
        image_replication_operator::replica_instance::oci::notify::Notifications::new(
            std::env::var("NOTIFICATION_TOKEN").ok(),
        ),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(shutdown_signal(stop_tx.clone()));

    let router = http::router(metrics.clone(), health.clone(), notifications.clone());
    let server = serve_http(args.http_addr, router, stop_rx.clone()).await?;

    let config = kube::Config::infer()
        .await
        .context("reading the Kubernetes client configuration (kubeconfig or in-cluster)")?;
    egress::install(egress_policy(&args.egress, &config)?);
    let client = Client::try_from(config).context("building the Kubernetes client")?;
    let mut crd_stop = stop_rx.clone();
    tokio::select! {
        r = wait_for_crds(&client, Duration::from_secs(args.crd_wait_seconds)) => r?,
        _ = wait_true(&mut crd_stop) => return Ok(()),
    }

    let mut elector = None;
    if args.leader_elect {
        health.set_standby();
        let mut e = Elector::new(
            client.clone(),
            LeaseConfig::new(&args.lease_namespace, &args.lease_name, &identity),
        );
        let mut s = stop_rx.clone();
        info!(identity = %identity, lease = %args.lease_name, "waiting for the leader lease");
        if !e.acquire(&mut s).await {
            let _ = server.await;
            return Ok(());
        }
        elector = Some(e);
    }
    health.set_not_ready();
    metrics.leader.set(1);
    info!(identity = %identity, "starting controllers");

    let ctx = Arc::new(context(&args, client, &identity, &metrics, &notifications));
    notifications.set_active(true);
    let mut controllers = tokio::spawn(controller::run(
        ctx,
        controller::Scope {
            namespace: args.namespace.clone(),
            labels: args.watch_label_selector.clone(),
        },
        args.concurrency,
        health.clone(),
        stop_rx.clone(),
    ));

    let (done_tx, mut done_rx) = watch::channel(false);
    let mut holder = tokio::spawn(async move {
        match elector {
            Some(mut e) => e.hold(&mut done_rx).await,
            None => {
                wait_true(&mut done_rx).await;
                false
            }
        }
    });

    let lost = tokio::select! {
        r = &mut holder => r.unwrap_or(true),
        _ = &mut controllers => {
            let _ = done_tx.send(true);
            holder.await.unwrap_or(false)
        }
    };
    metrics.leader.set(0);
    health.set_not_ready();
    notifications.set_active(false);
    if lost {
        error!("leader lease lost; stopping so that only one instance reconciles");
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), controllers).await;
        std::process::exit(1);
    }
    let _ = stop_tx.send(true);
    if let Err(e) = server.await {
        warn!(error = %e, "http server task failed");
    }
    info!("stopped");
    Ok(())
}
