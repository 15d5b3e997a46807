//! Fuzz targets: the parsers that read untrusted input (registry notifications, image
//! references, manifests and indexes, `WWW-Authenticate` challenges, EC2 XML, the clouds' JSON
//! answers and errors, Keystone tokens, glob filters, quantities, durations, `Retry-After` and
//! upload `Range` headers).
//!
//! Each target takes arbitrary bytes and must return without panicking. `tests/suites/fuzz.rs` replays
//! the seeds and runs a bounded, seeded mutation fuzzer over every target in `make test`; the
//! `fuzz/` crate runs the same targets under libFuzzer (`cargo +nightly fuzz run <name>`).

use serde_json::Value;

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    /// Must not panic, whatever the input.
    pub run: fn(&[u8]),
    /// Valid inputs to start from.
    pub seeds: &'static [&'static str],
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// Split at the first NUL: two inputs from one.
fn two(data: &[u8]) -> (String, String) {
    match data.iter().position(|b| *b == 0) {
        Some(i) => (text(&data[..i]), text(&data[i + 1..])),
        None => (text(data), String::new()),
    }
}

fn json(data: &[u8]) -> Option<Value> {
    serde_json::from_slice(data).ok()
}

fn notification_envelope(data: &[u8]) {
    let n = crate::replica_instance::oci::notify::Notifications::new(Some("fuzz-token".into()));
    n.set_active(true);
    n.subscribe("registry.example.com", "default/ri");
    n.subscribe("127.0.0.1:5000", "default/ri");
    let _ = n.handle(Some("Bearer fuzz-token"), data);
    let _ = n.take("default/ri");
}

fn image_reference(data: &[u8]) {
    let s = text(data);
    if let Ok(r) = crate::oci::ImageRef::parse(&s) {
        let _ = (r.to_string(), r.reference().to_string(), r.registry.url());
    }
    if let Ok(a) = crate::oci::RegistryAddr::parse(&s) {
        let _ = a.url();
    }
}

fn manifest(data: &[u8]) {
    let m = crate::oci::api::Manifest {
        bytes: bytes::Bytes::copy_from_slice(data),
        media_type: crate::oci::api::OCI_INDEX.into(),
        digest: crate::oci::api::sha256_digest(data),
    };
    let _ = m.is_index();
    if let Ok(body) = m.parse() {
        for d in body
            .manifests
            .iter()
            .chain(body.layers.iter())
            .chain(body.config.iter())
        {
            let _ = crate::oci::reference::valid_digest(&d.digest);
        }
    }
}

fn www_authenticate(data: &[u8]) {
    let _ = crate::oci::client::parse_challenge(&text(data));
}

fn ec2_xml(data: &[u8]) {
    let s = text(data);
    let _ = crate::image_replication::vm::providers::aws::error("DescribeImages", 400, &s, None);
    if let Ok(doc) = crate::cloud::xml::parse(&s) {
        if let Some(set) = doc.find("imagesSet") {
            for item in set.all("item") {
                let _ = crate::image_replication::vm::providers::aws::parse_image(item);
            }
        }
        let _ = doc.text_at("Errors/Error/Code");
    }
}

fn cloud_json(data: &[u8]) {
    let s = text(data);
    let _ = crate::image_replication::vm::providers::huawei::error("ListImages", 400, &s, None);
    let _ = crate::image_replication::vm::providers::alibaba::error("DescribeImages", 400, &s, None);
    if let Some(v) = json(data) {
        let _ = crate::image_replication::vm::providers::huawei::parse_image(&v);
        let _ = crate::image_replication::vm::providers::alibaba::parse_image(&v);
        let _ = crate::image_replication::vm::providers::tencent::parse_image(&v);
        let _ = crate::image_replication::vm::providers::openstack::parse_image(&v);
        for list in ["images", "Images", "ImageSet"] {
            for item in v.get(list).and_then(Value::as_array).into_iter().flatten() {
                let _ = crate::image_replication::vm::providers::huawei::parse_image(item);
                let _ = crate::image_replication::vm::providers::tencent::parse_image(item);
            }
        }
    }
}

fn keystone_token(data: &[u8]) {
    if let Some(v) = json(data) {
        let _ = crate::image_replication::vm::providers::openstack::parse_token("token", &v);
    }
}

fn glob_filter(data: &[u8]) {
    let (pattern, subject) = two(data);
    let _ = crate::replica_instance::oci::diff::glob(&pattern, &subject);
}

fn quantity_and_duration(data: &[u8]) {
    let s = text(data);
    let _ = crate::validation::parse_quantity(&s);
    let _ = crate::validation::parse_duration(&s);
}

fn http_headers(data: &[u8]) {
    let s = text(data);
    let _ = crate::oci::client::parse_retry_after(&s);
    let _ = crate::oci::api::held_bytes(Some(&s));
}

fn redaction(data: &[u8]) {
    let once = crate::redact::message(&text(data));
    assert!(
        once.len() <= crate::redact::MAX_MESSAGE,
        "a redacted message is bounded"
    );
    assert_eq!(crate::redact::message(&once), once, "redaction is idempotent");
}

/// Every target.
pub fn targets() -> &'static [Target] {
    &[
        Target {
            name: "notification_envelope",
            run: notification_envelope,
            seeds: &[
                r#"{"events":[{"id":"1","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"team/web","url":"http://registry.example.com/v2/team/web/manifests/sha256:ab","tag":"1.4"},"request":{"host":"registry.example.com"}}]}"#,
                r#"{"events":[{"action":"delete","target":{"repository":"a/b","url":"http://127.0.0.1:5000/v2/a/b/manifests/x"},"request":{"host":"127.0.0.1:5000"}},{"action":"pull","target":{"repository":"c"}}]}"#,
                r#"{"events":[]}"#,
            ],
        },
        Target {
            name: "image_reference",
            run: image_reference,
            seeds: &[
                "127.0.0.1:5000/team/web:1.4",
                "registry.example.com/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "https://registry.example.com/a/b:tag",
                "[::1]:5000/x/y:z",
                "http://registry.example.com:8080",
            ],
        },
        Target {
            name: "manifest",
            run: manifest,
            seeds: &[
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:3d5c2a2b9a1f5e0c0d7e5c3b0a7e1f2c3d4e5f60718293a4b5c6d7e8f9a0b1c2","size":123,"urls":["https://example.com/x"]}]}"#,
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":1,"platform":{"architecture":"amd64","os":"linux"}}]}"#,
            ],
        },
        Target {
            name: "www_authenticate",
            run: www_authenticate,
            seeds: &[
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:team/web:pull""#,
                r#"Basic realm="Registry Realm""#,
                r#"Bearer realm="https://a/t?x=1",error="invalid_token",scope="repository:a:pull,push repository:b:pull""#,
            ],
        },
        Target {
            name: "ec2_xml",
            run: ec2_xml,
            seeds: &[
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeImagesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>r</requestId><imagesSet><item><imageId>ami-1</imageId><name>web &amp; co</name><imageState>available</imageState><blockDeviceMapping><item><ebs><snapshotId>snap-1</snapshotId><encrypted>false</encrypted></ebs></item></blockDeviceMapping><tagSet><item><key>team</key><value>web</value></item></tagSet></item></imagesSet></DescribeImagesResponse>",
                "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>x</RequestID></Response>",
                "<CopyImageResponse><imageId>ami-2</imageId><!-- c --><![CDATA[x]]></CopyImageResponse>",
            ],
        },
        Target {
            name: "cloud_json",
            run: cloud_json,
            seeds: &[
                r#"{"images":[{"id":"img-1","name":"web","status":"active","__os_version":"Ubuntu","min_disk":40,"size":123,"__image_source_type":"uds","__productcode":"","tags":["a=b"],"visibility":"private"}]}"#,
                r#"{"Images":{"Image":[{"ImageId":"m-1","ImageName":"web","Status":"Available","Progress":"100%","Size":40,"Tags":{"Tag":[{"TagKey":"a","TagValue":"b"}]}}]},"RequestId":"r"}"#,
                r#"{"Response":{"ImageSet":[{"ImageId":"img-1","ImageName":"web","ImageState":"NORMAL","ImageType":"PRIVATE_IMAGE","CreatedTime":"2026-01-01T00:00:00Z","SyncPercent":50,"IsSupportCloudinit":true}],"RequestId":"r"}}"#,
                r#"{"error":{"code":"IMG.0149","message":"too many requests"},"error_code":"APIGW.0308","error_msg":"x"}"#,
                r#"{"Code":"Throttling.User","Message":"Request was denied due to user flow control.","RequestId":"r"}"#,
            ],
        },
        Target {
            name: "keystone_token",
            run: keystone_token,
            seeds: &[
                r#"{"token":{"expires_at":"2026-12-01T12:00:00.000000Z","project":{"id":"p"},"catalog":[{"type":"image","name":"glance","endpoints":[{"region_id":"RegionOne","region":"RegionOne","interface":"public","url":"http://127.0.0.1:9292"}]}]}}"#,
            ],
        },
        Target {
            name: "glob_filter",
            run: glob_filter,
            seeds: &[
                "team/*\u{0}team/web",
                "v1.*\u{0}v1.4",
                "**/x?\u{0}a/b/xy",
                "*[abc]*\u{0}b",
            ],
        },
        Target {
            name: "quantity_and_duration",
            run: quantity_and_duration,
            seeds: &["200Mi", "50M", "1.5Gi", "1h30m", "30s", "10m", "999999999999999999999h"],
        },
        Target {
            name: "http_headers",
            run: http_headers,
            seeds: &["120", "Wed, 21 Oct 2015 07:28:00 GMT", "0-0", "0-1048575", "bytes=0-99"],
        },
        Target {
            name: "redaction",
            run: redaction,
            seeds: &[
                "HTTP 401: Authorization: Bearer abc.def-123",
                "GET https://u:p@h/v2/?X-Amz-Signature=abc&token=t",
                r#"{"password": "x"}"#,
            ],
        },
    ]
}

/// Run the target named `name` on `data` (for the libFuzzer binaries).
pub fn run(name: &str, data: &[u8]) {
    if let Some(t) = targets().iter().find(|t| t.name == name) {
        (t.run)(data);
    }
}
