//! Each CEL rule of the generated CRDs rejects what it should and accepts what it should,
//! evaluated with kube's client-side CEL evaluator on the exact schema `crdgen` writes.

use image_replication_operator::api::{ImageReplication, ReplicaInstance};
use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};

fn schema<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

/// The messages of the rules that fail for `spec`.
fn failures<K: CustomResourceExt>(spec: Value) -> Vec<String> {
    let obj = json!({
        "apiVersion": "replication.imageops.io/v1alpha1",
        "kind": K::crd().spec.names.kind,
        "metadata": {"name": "x", "namespace": "default"},
        "spec": spec,
    });
    match Validator::new().validate(&schema::<K>(), &obj, None) {
        Ok(()) => vec![],
        Err(errs) => errs.iter().map(|e| e.message.clone()).collect(),
    }
}

fn image(patch: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut spec = json!({
        "provider": {"kind": "huawei", "agency": "ims_admin", "credentialsSecretRef": {"name": "hw"}},
        "source": {"region": "cn-north-4", "imageId": "img-1"},
        "destinations": [{"region": "cn-east-3"}, {"region": "cn-south-1", "name": "web-copy"}]
    });
    patch(&mut spec);
    failures::<ImageReplication>(spec)
}

fn assert_one(got: Vec<String>, want: &str) {
    assert_eq!(
        got.len(),
        1,
        "expected exactly one failure containing {want:?}, got {got:?}"
    );
    assert!(got[0].contains(want), "expected {want:?}, got {got:?}");
}

#[test]
fn valid_image_replications_pass() {
    assert_eq!(image(|_| {}), Vec::<String>::new());
    // Alibaba same-region copy-and-encrypt is allowed.
    assert_eq!(
        image(|s| {
            s["provider"] = json!({"kind": "alibaba", "credentialsSecretRef": {"name": "ali"}});
            s["destinations"] = json!([{"region": "cn-north-4", "encryption": {"kmsKeyId": "key-1"}}]);
        }),
        Vec::<String>::new()
    );
    // OCI with reference and registries.
    assert_eq!(
        image(|s| {
            s["provider"] = json!({"kind": "oci"});
            s["source"] = json!({"region": "region-a", "reference": "127.0.0.1:5000/team/web:1.4"});
            s["destinations"] = json!([{"region": "region-b", "registry": "http://127.0.0.1:5001"}]);
        }),
        Vec::<String>::new()
    );
}

#[test]
fn exactly_one_source_identifier() {
    assert_one(
        image(|s| s["source"]["imageName"] = json!("web")),
        "exactly one of source.imageId",
    );
    assert_one(
        image(|s| s["source"] = json!({"region": "cn-north-4"})),
        "exactly one of source.imageId",
    );
}

#[test]
fn destinations_between_one_and_unique() {
    assert_one(image(|s| s["destinations"] = json!([])), "at least one destination");
    assert_one(
        image(|s| s["destinations"] = json!([{"region": "cn-east-3"}, {"region": "cn-east-3"}])),
        "destination regions must be unique",
    );
}

#[test]
fn same_region_only_with_encryption() {
    assert_one(
        image(|s| s["destinations"][0]["region"] = json!("cn-north-4")),
        "must differ from source.region unless encryption is set",
    );
    assert_eq!(
        image(|s| {
            s["destinations"][0]["region"] = json!("cn-north-4");
            s["destinations"][0]["encryption"] = json!({});
        }),
        Vec::<String>::new()
    );
}

/// The seeds' "same region, cross-account": a same-region destination that only shares the
/// source; an empty shareWith does not count. (Unique accounts: a list keyed by account, which
/// the real API server enforces: tests/suites/envtest.rs.)
#[test]
fn same_region_with_share_with_and_unique_accounts() {
    assert_eq!(
        image(|s| {
            s["destinations"][0]["region"] = json!("cn-north-4");
            s["destinations"][0]["shareWith"] = json!([{"account": "0a1b2c3d4e5f60718293a4b5c6d7e8f9"}]);
        }),
        Vec::<String>::new()
    );
    assert_one(
        image(|s| {
            s["destinations"][0]["region"] = json!("cn-north-4");
            s["destinations"][0]["shareWith"] = json!([]);
        }),
        "must differ from source.region",
    );
}

#[test]
fn name_length_two_to_128() {
    assert_one(
        image(|s| s["destinations"][1]["name"] = json!("a")),
        "2 to 128 characters",
    );
    assert_one(
        image(|s| s["destinations"][1]["name"] = json!("a".repeat(129))),
        "2 to 128 characters",
    );
    assert_eq!(
        image(|s| s["destinations"][1]["name"] = json!("a".repeat(128))),
        Vec::<String>::new()
    );
    assert_eq!(
        image(|s| s["destinations"][1]["name"] = json!("ab")),
        Vec::<String>::new()
    );
}

#[test]
fn bounded_integers_and_region_format() {
    assert_one(
        image(|s| s["provider"]["maxConcurrentCopies"] = json!(0)),
        "between 1 and 100",
    );
    assert_one(
        image(|s| s["provider"]["maxConcurrentCopies"] = json!(101)),
        "between 1 and 100",
    );
    assert_eq!(
        image(|s| s["provider"]["maxConcurrentCopies"] = json!(5)),
        Vec::<String>::new()
    );
    assert_one(
        image(|s| s["destinations"][0]["region"] = json!("East 3")),
        "region ids",
    );
    // OpenStack region ids are Keystone's own: RegionOne is accepted there, and only there.
    let openstack = |src: &str, dst: &str| {
        image(|s| {
            s["provider"] = json!({"kind": "openstack", "credentialsSecretRef": {"name": "os"}});
            s["source"]["region"] = json!(src);
            s["destinations"] = json!([{"region": dst}]);
        })
    };
    assert_eq!(openstack("RegionOne", "RegionTwo"), Vec::<String>::new());
    assert_one(openstack("RegionOne", "Region/Two"), "Keystone region id");
    assert_one(
        image(|s| s["source"]["region"] = json!("RegionOne")),
        "only provider.kind openstack",
    );
}

#[test]
fn reference_is_for_oci_only() {
    assert_one(
        image(|s| s["source"] = json!({"region": "cn-north-4", "reference": "r/x:1"})),
        "source.reference is only for provider.kind oci",
    );
    assert_one(
        image(|s| {
            s["provider"] = json!({"kind": "oci"});
            s["destinations"] = json!([{"region": "cn-east-3", "registry": "http://r"}]);
        }),
        "source.reference is required when provider.kind is oci",
    );
    assert_one(
        image(|s| {
            s["provider"] = json!({"kind": "oci"});
            s["source"] = json!({"region": "region-a", "reference": "r/x:1"});
            s["destinations"] = json!([{"region": "region-b"}]);
        }),
        "every destination needs registry",
    );
}

fn replica(patch: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut spec = json!({
        "primary": {"provider": "oci", "region": "ap-guangzhou", "registry": "https://gz.example.com"},
        "region": "ap-shanghai",
        "replica": {"registry": "https://sh.example.com"},
        "sync": {"interval": "10m", "maxConcurrentTransfers": 8}
    });
    patch(&mut spec);
    failures::<ReplicaInstance>(spec)
}

#[test]
fn replica_instance_rules() {
    assert_eq!(replica(|_| {}), Vec::<String>::new());
    assert_one(
        replica(|s| s["region"] = json!("ap-guangzhou")),
        "must differ from primary.region",
    );
    assert_one(
        replica(|s| s.as_object_mut().unwrap().remove("replica").map(drop).unwrap()),
        "replica.registry are required",
    );
    assert_one(
        replica(|s| s["primary"] = json!({"provider": "tencent", "region": "ap-guangzhou"})),
        "primary.instanceId is required",
    );
    assert_eq!(
        replica(|s| s["primary"] = json!({"provider": "tencent", "region": "ap-guangzhou", "instanceId": "tcr-1"})),
        Vec::<String>::new()
    );
    assert_one(
        replica(|s| s["sync"]["interval"] = json!("10 minutes")),
        "interval must be a duration",
    );
    assert_eq!(
        replica(|s| s["sync"]["interval"] = json!("1h30m")),
        Vec::<String>::new()
    );
    assert_one(
        replica(|s| s["sync"]["maxConcurrentTransfers"] = json!(0)),
        "between 1 and 64",
    );
    assert_one(
        replica(|s| s["sync"]["maxConcurrentTransfers"] = json!(65)),
        "between 1 and 64",
    );
    assert_one(
        replica(|s| s["sync"]["bandwidthLimit"] = json!("fast")),
        "bandwidthLimit must be a quantity",
    );
    assert_eq!(
        replica(|s| s["sync"]["bandwidthLimit"] = json!("200Mi")),
        Vec::<String>::new()
    );
}
