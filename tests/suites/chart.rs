//! The Helm chart lints, `deploy/install.yaml` is what the chart renders, the CRDs come through
//! Helm unchanged, and the Argo CD health check reads the statuses the operator writes.
//!
//! Needs `helm` (`make tools` installs it into .tools/bin) and `lua5.1` (Argo CD runs gopher-lua,
//! a Lua 5.1); `HELM` and `LUA` override the paths.

use crate::support;

use std::process::Command;
use std::time::Duration;

use image_replication_operator::api::v1alpha1::ImageReplication;
use image_replication_operator::{crdgen, plan, validation};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CHART: &str = "charts/image-replication-operator";

/// The exact command `make render` runs.
fn render() -> String {
    support::helm(&[
        "template",
        "image-replication-operator",
        CHART,
        "--namespace",
        "image-replication-system",
        "--set",
        "createNamespace=true",
    ])
}

fn docs(yaml: &str) -> Vec<Value> {
    yaml.split("\n---")
        .filter_map(|d| serde_yaml::from_str::<Value>(d).ok())
        .filter(|v| v.is_object())
        .collect()
}

#[test]
fn chart_lints() {
    let out = support::helm(&["lint", "--strict", CHART]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn install_yaml_is_the_rendered_chart() {
    let committed = std::fs::read_to_string(format!("{ROOT}/deploy/install.yaml")).unwrap();
    assert!(committed == render(), "deploy/install.yaml is stale; run `make render`");
}

#[test]
fn crds_come_through_helm_unchanged_and_are_kept() {
    let rendered = docs(&render());
    for crd in crdgen::crds() {
        let name = crd.metadata.name.clone().unwrap();
        let mut got = rendered
            .iter()
            .find(|d| d["kind"] == "CustomResourceDefinition" && d["metadata"]["name"] == json!(name))
            .unwrap_or_else(|| panic!("{name} not rendered"))
            .clone();
        assert_eq!(got["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
        got["metadata"].as_object_mut().unwrap().remove("annotations");
        assert_eq!(
            got,
            serde_json::to_value(&crd).unwrap(),
            "{name} changed on its way through Helm"
        );
    }
    // crds.install=false leaves them out.
    let without = support::helm(&["template", "x", CHART, "--set", "crds.install=false"]);
    assert!(!without.contains("kind: CustomResourceDefinition"));
}

#[test]
fn deployment_runs_locked_down_with_probes_and_leader_election() {
    let rendered = docs(&render());
    let d = rendered.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(args.contains(&"--leader-elect"), "{args:?}");
    let role = rendered.iter().find(|d| d["kind"] == "Role").unwrap();
    assert_eq!(role["rules"][0]["resources"], json!(["leases"]));
    // The notification token comes from a Secret when one is named.
    let with_token = docs(&support::helm(&[
        "template",
        "x",
        CHART,
        "--set",
        "notifications.tokenSecret.name=notify",
    ]));
    let d = with_token.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let tok = env
        .iter()
        .find(|e| e["name"] == "NOTIFICATION_TOKEN")
        .expect("NOTIFICATION_TOKEN env");
    assert_eq!(
        tok["valueFrom"]["secretKeyRef"],
        json!({"name": "notify", "key": "token"})
    );
    // ServiceMonitor only when asked for.
    assert!(!render().contains("kind: ServiceMonitor"));
    assert!(
        support::helm(&["template", "x", CHART, "--set", "serviceMonitor.enabled=true"])
            .contains("kind: ServiceMonitor")
    );
}

#[test]
fn values_schema_rejects_bad_values() {
    let out = Command::new(support::tool("HELM", ".tools/bin/helm", "helm"))
        .args(["template", "x", CHART, "--set", "logFormat=xml"])
        .current_dir(ROOT)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("logFormat"));
}

/// The rules of the rendered RBAC object of `kind` named `name`, as (resource, verbs) pairs.
fn rbac_rules(rendered: &[Value], kind: &str, name: &str) -> Option<Vec<(String, Vec<String>)>> {
    let obj = rendered
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)?;
    let mut out = Vec::new();
    for rule in obj["rules"].as_array().unwrap() {
        let verbs: Vec<String> = serde_json::from_value(rule["verbs"].clone()).unwrap();
        for r in rule["resources"].as_array().unwrap() {
            out.push((r.as_str().unwrap().to_string(), verbs.clone()));
        }
    }
    Some(out)
}

#[test]
fn rbac_is_a_namespace_role_when_one_namespace_is_watched() {
    let name = "x-image-replication-operator";
    let has = |rules: &[(String, Vec<String>)], res: &str| rules.iter().any(|(r, _)| r == res);
    // All namespaces: Secrets and the kinds through the ClusterRole.
    let all = docs(&support::helm(&["template", "x", CHART]));
    let cluster = rbac_rules(&all, "ClusterRole", name).unwrap();
    assert!(
        has(&cluster, "secrets") && has(&cluster, "imagereplications"),
        "{cluster:?}"
    );
    // Secrets are only ever read.
    let secrets = cluster.iter().find(|(r, _)| r == "secrets").unwrap();
    assert_eq!(secrets.1, vec!["get".to_string()]);
    assert!(rbac_rules(&all, "Role", name).is_none());

    // One namespace: the ClusterRole keeps only the CRDs; the rest is a Role bound there.
    let one = docs(&support::helm(&[
        "template",
        "x",
        CHART,
        "--set",
        "watchNamespace=team-a",
    ]));
    let cluster = rbac_rules(&one, "ClusterRole", name).unwrap();
    assert_eq!(
        cluster.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(),
        vec!["customresourcedefinitions"],
        "cluster-wide rights beyond the CRDs with watchNamespace set"
    );
    let role = rbac_rules(&one, "Role", name).unwrap();
    for res in ["secrets", "imagereplications", "replicainstances/status", "events"] {
        assert!(has(&role, res), "{res} missing from the Role: {role:?}");
    }
    let role_obj = one
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["name"] == name)
        .unwrap();
    assert_eq!(role_obj["metadata"]["namespace"], "team-a");
    let binding = one
        .iter()
        .find(|d| d["kind"] == "RoleBinding" && d["metadata"]["name"] == name)
        .unwrap();
    assert_eq!(binding["metadata"]["namespace"], "team-a");
    assert_eq!(binding["roleRef"]["name"], name);
}

#[test]
fn egress_policy_values_reach_the_operator() {
    let env_of = |rendered: &[Value]| -> Vec<(String, String)> {
        let d = rendered.iter().find(|d| d["kind"] == "Deployment").unwrap();
        d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| Some((e["name"].as_str()?.to_string(), e["value"].as_str()?.to_string())))
            .collect()
    };
    let defaults = env_of(&docs(&render()));
    let cloud = defaults.iter().find(|(k, _)| k == "EGRESS_CLOUD_HOSTS").unwrap();
    // The chart's default is the operator's own default.
    assert_eq!(
        cloud.1,
        image_replication_operator::image_replication::vm::providers::default_cloud_hosts()
    );
    assert!(defaults.contains(&("EGRESS_REGISTRY_HOSTS".into(), "*".into())));
    let set = env_of(&docs(&support::helm(&[
        "template",
        "x",
        CHART,
        "--set-string",
        "egress.registryHosts=*.corp.example\\,registry.example.com:5000",
    ])));
    assert!(
        set.contains(&(
            "EGRESS_REGISTRY_HOSTS".into(),
            "*.corp.example,registry.example.com:5000".into()
        )),
        "{set:?}"
    );
}

/// `identity.<cloud>`: the ServiceAccount carries the IRSA annotation; the chart projects a
/// token per cloud with the audience that cloud's STS expects (from the provider's own facts)
/// where the variables it sets say, as the cloud's webhook would; by default none of it is
/// there.
#[test]
fn workload_identity_values_project_the_token_each_cloud_expects() {
    use image_replication_operator::api::v1alpha1::ProviderKind;
    let audience = |kind: ProviderKind| {
        image_replication_operator::image_replication::vm::providers::cloud(kind)
            .and_then(|c| c.identity)
            .unwrap()
            .audience
    };
    let rendered = docs(&support::helm(&[
        "template",
        "x",
        CHART,
        "--set",
        "identity.aws.roleArn=arn:aws:iam::123456789012:role/imgrep",
        "--set",
        "identity.aws.projectToken=true",
        "--set",
        "identity.aws.region=eu-west-1",
        "--set",
        "identity.alibaba.roleArn=acs:ram::1234567890123456:role/imgrep",
        "--set",
        "identity.alibaba.oidcProviderArn=acs:ram::1234567890123456:oidc-provider/ack-rrsa-c1",
        "--set",
        "identity.tencent.roleArn=qcs::cam::uin/100000000001:roleName/imgrep",
        "--set",
        "identity.tencent.providerId=tke-oidc-c1",
        "--set",
        "identity.tencent.region=ap-guangzhou",
        "--set",
        "identity.huawei.idpId=cce-oidc-c1",
        "--set",
        "identity.google.poolProvider=//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/k8s/providers/c1",
        "--set",
        "identity.google.serviceAccount=imgrep@p1.iam.gserviceaccount.com",
        "--set",
        "identity.google.project=p1",
        "--set",
        "identity.azure.clientId=22222222-0000-4000-8000-000000000001",
        "--set",
        "identity.azure.subscriptionId=00000000-0000-4000-8000-000000000001",
    ]));
    let sa = rendered.iter().find(|d| d["kind"] == "ServiceAccount").unwrap();
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/imgrep"
    );
    let pod = &rendered.iter().find(|d| d["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let env = |name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .map(String::from)
    };
    for (kind, file_var, volume) in [
        (ProviderKind::Aws, "AWS_WEB_IDENTITY_TOKEN_FILE", "aws-identity-token"),
        (
            ProviderKind::Alibaba,
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
            "alibaba-identity-token",
        ),
        (
            ProviderKind::Tencent,
            "TKE_WEB_IDENTITY_TOKEN_FILE",
            "tencent-identity-token",
        ),
        (
            ProviderKind::Huawei,
            "HUAWEICLOUD_SDK_ID_TOKEN_FILE",
            "huawei-identity-token",
        ),
    ] {
        let v = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == volume)
            .unwrap();
        let token = &v["projected"]["sources"][0]["serviceAccountToken"];
        assert_eq!(token["audience"], audience(kind), "{kind:?}");
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap();
        assert_eq!(
            env(file_var).as_deref(),
            Some(
                format!(
                    "{}/{}",
                    mount["mountPath"].as_str().unwrap(),
                    token["path"].as_str().unwrap()
                )
                .as_str()
            ),
            "{kind:?}"
        );
        // Every variable the chart sets is one the provider reads.
        let reads = image_replication_operator::image_replication::vm::providers::cloud(kind)
            .and_then(|c| c.identity)
            .unwrap()
            .variables;
        assert!(reads.contains(&file_var), "{kind:?}: {file_var}");
    }
    for set in c["env"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()) {
        let cloud_var = ["AWS_", "ALIBABA_", "TKE_", "HUAWEICLOUD_", "GOOGLE_", "AZURE_"]
            .iter()
            .any(|p| set.starts_with(p));
        let read = image_replication_operator::image_replication::vm::providers::CLOUDS
            .iter()
            .filter_map(|c| c.identity)
            .any(|i| i.variables.contains(&set));
        assert!(!cloud_var || read, "{set} is set but no provider reads it");
    }
    assert_eq!(env("AWS_REGION").as_deref(), Some("eu-west-1"));
    // Azure: AKS's webhook does the token; the chart asks for it and names the subscription.
    assert_eq!(
        sa["metadata"]["annotations"]["azure.workload.identity/client-id"],
        "22222222-0000-4000-8000-000000000001"
    );
    let deployment = rendered.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    assert_eq!(
        env("AZURE_SUBSCRIPTION_ID").as_deref(),
        Some("00000000-0000-4000-8000-000000000001")
    );
    // Google: the external_account configuration beside the token, as the operator reads it.
    let v = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "google-identity-token")
        .unwrap();
    assert_eq!(
        v["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        audience(ProviderKind::Google)
    );
    let cm_name = v["projected"]["sources"][1]["configMap"]["name"].as_str().unwrap();
    let cm = rendered
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == cm_name)
        .unwrap();
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "google-identity-token")
        .unwrap()["mountPath"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        env("GOOGLE_APPLICATION_CREDENTIALS"),
        Some(format!("{mount}/credentials.json"))
    );
    assert_eq!(env("GOOGLE_CLOUD_PROJECT").as_deref(), Some("p1"));
    let ext = image_replication_operator::image_replication::vm::providers::google::sts::External::parse(
        cm["data"]["credentials.json"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(ext.token_file, format!("{mount}/token"));
    assert!(
        ext.impersonation_url
            .unwrap()
            .ends_with("/imgrep@p1.iam.gserviceaccount.com:generateAccessToken")
    );
    // On EKS (the webhook projects the token itself), only the annotation.
    let eks = docs(&support::helm(&[
        "template",
        "x",
        CHART,
        "--set",
        "identity.aws.roleArn=arn:aws:iam::123456789012:role/imgrep",
    ]));
    let pod = &eks.iter().find(|d| d["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"];
    assert!(pod["volumes"].is_null() && !pod["containers"][0]["env"].to_string().contains("AWS_"));
    let plain = docs(&render());
    let sa = plain.iter().find(|d| d["kind"] == "ServiceAccount").unwrap();
    assert!(sa["metadata"]["annotations"].is_null(), "{sa}");
}

/// `shards: [a, b]`: the main Deployment takes the objects of no shard, one Deployment per
/// shard takes its own; each has its own Lease and Service, none selects another's pods, all
/// are one installation with one ServiceAccount. A bad shard name is refused.
#[test]
fn shards_render_one_deployment_each_with_disjoint_selectors() {
    let rendered = docs(&support::helm(&[
        "template",
        "r",
        CHART,
        "--set",
        "shards={a,b}",
        "--set",
        "networkPolicy.enabled=true",
    ]));
    let deployments: Vec<&Value> = rendered.iter().filter(|d| d["kind"] == "Deployment").collect();
    assert_eq!(deployments.len(), 3);
    let arg = |d: &Value, flag: &str| -> Option<String> {
        d["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .find_map(|a| a.strip_prefix(&format!("{flag}=")).map(String::from))
    };
    let env = |d: &Value, name: &str| -> Option<String> {
        d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()?
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str().map(String::from))
    };
    let mut selectors: Vec<String> = deployments
        .iter()
        .map(|d| arg(d, "--watch-label-selector").unwrap())
        .collect();
    selectors.sort();
    assert_eq!(
        selectors,
        [
            "replication.imageops.io/shard in (a)",
            "replication.imageops.io/shard in (b)",
            "replication.imageops.io/shard notin (a,b)"
        ]
    );
    let leases: std::collections::BTreeSet<String> =
        deployments.iter().map(|d| arg(d, "--lease-name").unwrap()).collect();
    assert_eq!(leases.len(), 3, "{leases:?}");
    let installs: std::collections::BTreeSet<String> =
        deployments.iter().map(|d| env(d, "INSTALLATION").unwrap()).collect();
    assert_eq!(installs.len(), 1, "one installation: {installs:?}");
    let accounts: std::collections::BTreeSet<&str> = deployments
        .iter()
        .map(|d| d["spec"]["template"]["spec"]["serviceAccountName"].as_str().unwrap())
        .collect();
    assert_eq!(accounts.len(), 1);
    // No Deployment's selector matches another's pods.
    let matches = |sel: &Value, labels: &Value| sel.as_object().unwrap().iter().all(|(k, v)| labels.get(k) == Some(v));
    for d in &deployments {
        for e in deployments
            .iter()
            .filter(|e| e["metadata"]["name"] != d["metadata"]["name"])
        {
            assert!(
                !matches(
                    &d["spec"]["selector"]["matchLabels"],
                    &e["spec"]["template"]["metadata"]["labels"]
                ),
                "{} selects the pods of {}",
                d["metadata"]["name"],
                e["metadata"]["name"]
            );
        }
    }
    // One Service per Deployment, each selecting its pods; the network policy admits them all.
    let services: Vec<&Value> = rendered.iter().filter(|d| d["kind"] == "Service").collect();
    assert_eq!(services.len(), 3);
    for d in &deployments {
        let pods = &d["spec"]["template"]["metadata"]["labels"];
        assert_eq!(
            services
                .iter()
                .filter(|s| matches(&s["spec"]["selector"], pods))
                .count(),
            1
        );
    }
    let np = rendered.iter().find(|d| d["kind"] == "NetworkPolicy").unwrap();
    let admitted = np["spec"]["podSelector"]["matchExpressions"][0]["values"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(admitted, 3);
    // Without shards: one Deployment that watches everything.
    let plain = docs(&render());
    let d = plain.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(arg(d, "--watch-label-selector"), None);
    let out = Command::new(support::tool("HELM", ".tools/bin/helm", "helm"))
        .args(["template", "x", CHART, "--set", "shards={Bad_Name}"])
        .current_dir(ROOT)
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("shards"));
}

// ---------- Argo CD health check ----------

fn lua_literal(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => format!("{{{}}}", a.iter().map(lua_literal).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("[{k:?}] = {}", lua_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Run the health check on an object: (status, message).
fn argocd_health(obj: &Value) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let harness = dir.path().join("harness.lua");
    std::fs::write(
        &harness,
        format!(
            "obj = {}\nlocal hs = assert(loadfile({:?}))()\nio.write(hs.status, \"\\n\", hs.message or \"\")\n",
            lua_literal(obj),
            format!("{ROOT}/deploy/gitops/argocd-health.lua")
        ),
    )
    .unwrap();
    let out = Command::new(support::tool("LUA", ".tools/bin/lua5.1", "lua5.1"))
        .arg(&harness)
        .output()
        .expect("run lua5.1");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8(out.stdout).unwrap();
    let (a, b) = s.split_once('\n').unwrap();
    (a.to_string(), b.to_string())
}

fn planned(mutate: impl FnOnce(&mut ImageReplication), implemented: bool) -> Value {
    let mut o: ImageReplication = serde_yaml::from_str(include_str!("../../deploy/examples/huawei.yaml")).unwrap();
    o.metadata.generation = Some(1);
    mutate(&mut o);
    let now = Time(Timestamp::now());
    let gate = plan::gate(
        validation::image_replication(&o.spec),
        o.spec.provider.kind.as_str(),
        implemented,
        o.spec.suspend,
    );
    o.status = Some(plan::image_replication_status(&o, &gate, &now));
    serde_json::to_value(&o).unwrap()
}

#[test]
fn argocd_health_reads_the_operator_status() {
    let no_status = serde_json::to_value(
        serde_yaml::from_str::<ImageReplication>(include_str!("../../deploy/examples/huawei.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(argocd_health(&no_status).0, "Progressing");

    let (st, msg) = argocd_health(&planned(|_| {}, false));
    assert_eq!(st, "Degraded");
    assert!(msg.starts_with("ProviderNotImplemented"), "{msg}");

    let (st, msg) = argocd_health(&planned(|o| o.spec.provider.agency = None, false));
    assert_eq!(st, "Degraded");
    assert!(msg.starts_with("AgencyRequired"), "{msg}");

    assert_eq!(argocd_health(&planned(|o| o.spec.suspend = true, true)).0, "Suspended");

    let mut stale = planned(|_| {}, false);
    stale["metadata"]["generation"] = json!(2);
    assert_eq!(argocd_health(&stale).0, "Progressing");

    let mut ready = planned(|_| {}, true);
    for c in ready["status"]["conditions"].as_array_mut().unwrap() {
        if c["type"] == "Ready" {
            c["status"] = json!("True");
            c["message"] = json!("2/2 available");
        }
    }
    assert_eq!(
        argocd_health(&ready),
        ("Healthy".to_string(), "2/2 available".to_string())
    );
}

#[test]
fn argocd_cm_embeds_the_same_lua_for_both_kinds() {
    let lua = std::fs::read_to_string(format!("{ROOT}/deploy/gitops/argocd-health.lua")).unwrap();
    let cm: Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{ROOT}/deploy/gitops/argocd-cm.yaml")).unwrap())
            .unwrap();
    for kind in ["ImageReplication", "ReplicaInstance"] {
        let key = format!("resource.customizations.health.replication.imageops.io_{kind}");
        assert_eq!(
            cm["data"][&key].as_str(),
            Some(lua.as_str()),
            "{key} differs from argocd-health.lua"
        );
    }
}

/// The chart with `dashboards.enabled` and `prometheusRule.enabled`.
fn render_observability() -> Vec<Value> {
    docs(&support::helm(&[
        "template",
        "iro",
        CHART,
        "--namespace",
        "ops",
        "--set",
        "dashboards.enabled=true",
        "--set",
        "prometheusRule.enabled=true",
    ]))
}

/// Metric names (`imgrep_*`, without the histogram suffixes) an expression names.
fn metric_names(expr: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("imgrep_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(base.to_string());
        rest = &tail[end..];
    }
    out
}

/// The dashboard ConfigMap (with the sidecar label) and the PrometheusRule render, off by
/// default; returns every metric their queries and alerts name.
fn observability_metrics() -> std::collections::BTreeSet<String> {
    assert!(
        !render().contains("kind: PrometheusRule") && !render().contains("grafana_dashboard"),
        "both are off by default"
    );
    let docs = render_observability();
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "iro-image-replication-operator-dashboard")
        .expect("dashboard ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let dash: Value = serde_json::from_str(cm["data"]["image-replication-operator.json"].as_str().unwrap()).unwrap();
    let mut names = std::collections::BTreeSet::new();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            names.extend(metric_names(t["expr"].as_str().unwrap()));
        }
    }
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("PrometheusRule");
    let alerts: Vec<&Value> = rule["spec"]["groups"][0]["rules"].as_array().unwrap().iter().collect();
    let alert_names: Vec<&str> = alerts.iter().filter_map(|a| a["alert"].as_str()).collect();
    for want in [
        "ImageReplicationCopyNotProgressing",
        "ImageReplicationVmCopyStuck",
        "ImageReplicationReplicaLagHigh",
        "ImageReplicationCredentialsRefused",
        "ImageReplicationQuotaQueueGrowing",
        "ImageReplicationReconcileErrors",
        "ImageReplicationNoLeader",
    ] {
        assert!(alert_names.contains(&want), "{want}: {alert_names:?}");
    }
    for a in alerts {
        names.extend(metric_names(a["expr"].as_str().unwrap()));
    }
    names
}

/// Every metric the dashboard and the alerts name is one the operator serves on /metrics: the
/// operator runs a copy (oci), a cloud VM copy (the Alibaba stand-in) and a replica sync, and
/// gets a notification, then its /metrics is read.
#[tokio::test(flavor = "multi_thread")]
async fn dashboard_and_alerts_name_only_metrics_the_operator_serves() {
    use image_replication_operator::api::ReplicaInstance;
    use kube::Api;
    use kube::api::PostParams;
    use support::clouds::{AK, Kind, SK, Stand};
    use support::operator::{Operator, eventually};
    use support::registry::TestRegistry;

    let wanted = observability_metrics();
    assert!(wanted.len() >= 12, "{wanted:?}");

    let (a, b) = (TestRegistry::start(), TestRegistry::start());
    a.seed("team/web", "1.4", &["--platforms", "linux/amd64"]);
    let ecs = Stand::start(Kind::Alibaba).await;
    let src = ecs.add("cn-hangzhou", "web", 20, json!({}));
    let (s, c) = support::cluster().await;
    support::secret(&c, "ali", &[("accessKeyId", AK), ("accessKeySecret", SK)]).await;
    let dir = tempfile::tempdir().unwrap();
    let op = Operator::start(&s.write_kubeconfig(dir.path()), dir.path(), "op-a", &[]);
    let ir: Api<ImageReplication> = Api::namespaced(c.clone(), "default");
    for spec in [
        json!({"provider": {"kind": "oci"}, "source": {"region": "a", "reference": format!("{}/team/web:1.4", a.host())},
               "destinations": [{"region": "b", "registry": b.url()}]}),
        json!({"provider": {"kind": "alibaba", "credentialsSecretRef": {"name": "ali"}, "endpoint": ecs.url},
               "source": {"region": "cn-hangzhou", "imageId": src}, "destinations": [{"region": "cn-shanghai"}]}),
    ] {
        let name = if spec["provider"]["kind"] == "oci" { "oci" } else { "vm" };
        let o: ImageReplication = serde_json::from_value(json!({"apiVersion": "replication.imageops.io/v1alpha1",
            "kind": "ImageReplication", "metadata": {"name": name, "namespace": "default"}, "spec": spec}))
        .unwrap();
        ir.create(&PostParams::default(), &o).await.unwrap();
    }
    let ri: Api<ReplicaInstance> = Api::namespaced(c.clone(), "default");
    let r: ReplicaInstance = serde_json::from_value(json!({"apiVersion": "replication.imageops.io/v1alpha1",
        "kind": "ReplicaInstance", "metadata": {"name": "rep", "namespace": "default"},
        "spec": {"primary": {"provider": "oci", "region": "ap-guangzhou", "registry": a.url()},
                 "region": "ap-shanghai", "replica": {"registry": b.url()}}}))
    .unwrap();
    ri.create(&PostParams::default(), &r).await.unwrap();
    for name in ["oci", "vm"] {
        eventually(Duration::from_secs(60), &format!("{name} Ready"), || async {
            let st = ir.get(name).await.ok()?.status?;
            st.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        })
        .await;
    }
    let _ = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/notifications", op.http_port))
        .body("{}")
        .send()
        .await;
    // Families appear as their first sample is recorded: wait for them, then name what is missing.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (text, missing) = loop {
        let text = op.http_get("/metrics").map(|(_, t)| t).unwrap_or_default();
        let served: std::collections::BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(String::from)
            .collect();
        let missing: Vec<String> = wanted.difference(&served).cloned().collect();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break (text, missing);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        missing.is_empty(),
        "named by the dashboard or alerts, not on /metrics: {missing:?}"
    );
    assert!(text.contains("imgrep_leader 1"), "{text}");
}
