//! The project's signers and error tables held to the clouds' official SDKs (installed by
//! `make tools` into `.tools/sdk`). The stand-ins' exchanges are checked against the SDKs'
//! request and response models at the end of every cloud test (`Stand::assert_conforms`).

use crate::support;

use image_replication_operator::cloud::sign;
use image_replication_operator::cloud::{self, ErrorClass};
use image_replication_operator::image_replication::vm::providers::{alibaba, aws, huawei, tencent};
use serde_json::{Value, json};
use support::conformance::{sdk_error_codes, sdk_signatures};

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Fixed requests (clocks pinned), signed by the SDKs and by us: the same bytes.
#[test]
fn signers_agree_with_the_sdks_signers() {
    let hw_query = pairs(&[("name", "web golden"), ("tag", "imgrep_client_token=imgrep-1")]);
    let hw_headers = pairs(&[
        ("Content-Type", "application/json"),
        ("Host", "ims.cn-north-4.myhuaweicloud.com"),
        ("X-Sdk-Date", "20261124T080000Z"),
        ("X-Project-Id", "0a1b2c3d"),
        ("X-Security-Token", "tok/en+="),
    ]);
    let hw_body = r#"{"tag":{"key":"imgrep_client_token","value":"imgrep-1"}}"#;
    let ali_query = pairs(&[
        ("Action", "CopyImage"),
        ("Version", "2014-05-26"),
        ("Format", "JSON"),
        ("AccessKeyId", "testid"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
        ("Timestamp", "2026-11-24T08:00:00Z"),
        ("RegionId", "cn-hangzhou"),
        ("ImageId", "m-abc"),
        ("DestinationImageName", "web golden/ä*~"),
        ("Tag.1.Key", "imgrep_client_token"),
        ("Tag.1.Value", "imgrep-1"),
    ]);
    let aws_headers = pairs(&[
        ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
        ("Host", "ec2.eu-west-1.amazonaws.com"),
        ("X-Amz-Date", "20261124T080000Z"),
        ("X-Amz-Security-Token", "session/token="),
    ]);
    let aws_body = "Action=CopyImage&ClientToken=imgrep-1&Name=web%20golden&SourceImageId=ami-1&SourceRegion=us-east-1&Version=2016-11-15";
    let tc_body =
        json!({"ImageIds": ["img-1"], "DestinationRegions": ["ap-shanghai"], "ImageName": "web", "DryRun": true});
    let reqs = json!([
        {"kind": "huawei", "ak": "AKHW", "sk": "sk/hw", "method": "POST", "host": "ims.cn-north-4.myhuaweicloud.com",
         "path": "/v2/0a1b2c3d/images/7e1c/tags", "query": hw_query, "headers": hw_headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<String, Value>>(), "body": hw_body},
        {"kind": "alibaba", "sk": "testsecret", "method": "GET", "query": ali_query},
        {"kind": "aws", "ak": "AKIDEXAMPLE", "sk": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "service": "ec2",
         "region": "eu-west-1", "method": "POST", "host": "ec2.eu-west-1.amazonaws.com", "path": "/",
         "headers": {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "X-Amz-Security-Token": "session/token="},
         "body": aws_body, "amz_date": "20261124T080000Z"},
        {"kind": "tencent", "ak": "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE", "sk": "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
         "service": "cvm", "version": "2017-03-12", "region": "ap-guangzhou", "host": "cvm.tencentcloudapi.com",
         "action": "SyncImages", "body": tc_body.to_string(), "timestamp": 1795939200},
    ]);
    let sdk = sdk_signatures(&reqs);

    let ours = sign::huawei(
        "AKHW",
        "sk/hw",
        "POST",
        "/v2/0a1b2c3d/images/7e1c/tags",
        &hw_query,
        &hw_headers,
        hw_body.as_bytes(),
    );
    assert_eq!(sdk[0]["authorization"], ours.authorization, "Huawei SDK-HMAC-SHA256");

    let ours = sign::alibaba_rpc("testsecret", "GET", &ali_query);
    assert_eq!(sdk[1]["signature"], ours.signature, "Alibaba RPC HMAC-SHA1");

    let ours = sign::aws_v4(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "eu-west-1",
        "ec2",
        "POST",
        "/",
        &[],
        &aws_headers,
        aws_body.as_bytes(),
        "20261124T080000Z",
    );
    assert_eq!(sdk[2]["authorization"], ours.authorization, "AWS SigV4");

    // The SDK signs content-type;host over the JSON it serialized itself.
    let body = sdk[3]["body"].as_str().unwrap();
    let ours = sign::tencent_tc3(
        "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
        "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
        "cvm",
        &pairs(&[
            ("Content-Type", "application/json"),
            ("Host", "cvm.tencentcloudapi.com"),
        ]),
        body.as_bytes(),
        1795939200,
    );
    assert_eq!(sdk[3]["authorization"], ours.authorization, "Tencent TC3-HMAC-SHA256");
}

/// Every error code the Tencent SDKs list for CVM and TCR (and the API 3.0 common codes) falls
/// under an entry of the provider's table; the codes that matter are classified as they must be.
#[test]
fn every_error_code_the_sdks_list_is_classified() {
    let codes = sdk_error_codes();
    for service in ["cvm", "tcr"] {
        let list = codes[service].as_array().unwrap();
        assert!(list.len() > 50, "{service}: {} codes", list.len());
        let unclassified: Vec<&str> = list
            .iter()
            .filter_map(Value::as_str)
            .filter(|c| cloud::lookup(tencent::ERROR_CODES, c).is_none())
            .collect();
        assert!(
            unclassified.is_empty(),
            "{service} codes with no table entry: {unclassified:?}"
        );
    }
    for (code, want) in [
        ("ResourceNotFound.TcrResourceNotFound", ErrorClass::NotFound),
        ("ResourceNotFound", ErrorClass::NotFound),
        ("InternalError.ErrNotExist", ErrorClass::NotFound),
        ("InvalidImageId.NotFound", ErrorClass::NotFound),
        ("InternalError", ErrorClass::RetryLater),
        ("RequestLimitExceeded", ErrorClass::Throttled),
        ("RequestLimitExceeded.UinLimitExceeded", ErrorClass::Throttled),
        ("AuthFailure.SignatureFailure", ErrorClass::Auth),
        ("InvalidRegion.Unavailable", ErrorClass::Permanent),
        ("InvalidImageId.IncorrectState", ErrorClass::RetryLater),
        // Share errors: a wrong account id is not a credentials error, a busy image is
        // retried, the 500-account quota is not.
        ("InvalidAccountId.NotFound", ErrorClass::Permanent),
        ("InvalidAccountIs.YourSelf", ErrorClass::Permanent),
        ("InvalidAccount.UnpaidOrder", ErrorClass::Auth),
        ("FailedOperation.InvalidImageState", ErrorClass::RetryLater),
        ("InvalidParameterValue.InvalidImageState", ErrorClass::RetryLater),
        ("OverQuota", ErrorClass::Permanent),
    ] {
        assert_eq!(tencent::classify(code), want, "{code}");
    }

    // AWS: every code botocore retries as throttling is throttling here (EC2ThrottledException).
    let throttling = codes["aws_throttling"].as_array().unwrap();
    assert!(throttling.iter().any(|c| c == "EC2ThrottledException"));
    for c in throttling.iter().filter_map(Value::as_str) {
        assert_eq!(aws::classify(400, c), ErrorClass::Throttled, "{c}");
    }
    assert_eq!(aws::classify(503, "EC2ThrottledException"), ErrorClass::Throttled);
    assert_eq!(aws::classify(400, "InvalidAMIID.NotFound"), ErrorClass::NotFound);
    assert_eq!(aws::classify(401, "AuthFailure"), ErrorClass::Auth);

    // Alibaba and Huawei: their SDKs list no codes; the tables follow the API references.
    // Not found is exact: a wrong AccessKey is not a gone image.
    assert_eq!(alibaba::classify(404, "InvalidAccessKeyId.NotFound"), ErrorClass::Auth);
    assert_eq!(alibaba::classify(404, "InvalidImageId.NotFound"), ErrorClass::NotFound);
    assert_eq!(alibaba::classify(400, "Throttling.User"), ErrorClass::Throttled);
    assert_eq!(alibaba::classify(400, "SomethingNotFound.Else"), ErrorClass::Permanent);
    assert_eq!(huawei::classify(400, "IMG.0149"), ErrorClass::Throttled);
    assert_eq!(huawei::classify(400, "IMG.0060"), ErrorClass::Throttled);
    assert_eq!(huawei::classify(400, "IMG.0190"), ErrorClass::RetryLater);
    assert_eq!(huawei::classify(403, "IMG.0003"), ErrorClass::Auth);
    // An unknown code goes by its status: the message is not read.
    assert_eq!(huawei::classify(400, "IMG.9999"), ErrorClass::Permanent);
    assert_eq!(huawei::classify(503, "IMG.9999"), ErrorClass::RetryLater);
}

/// The SDK check holds values, not only names: documented ranges (ECS `PageSize`, CVM `Limit`
/// at most 100), enumerations (CVM `Permission`, ECS `Status`, CVM filter names, EC2's enums
/// from botocore's shapes) — a `Limit` of 1000 passed unseen before. `violations` is what a
/// failing cloud test prints first (the stand-in's `Drop`), so a wrong request is named
/// instead of ending as a stand-in timeout.
#[test]
fn the_sdk_check_holds_documented_ranges_and_enumerations() {
    let ali = |q: &[(&str, &str)]| {
        let mut query: Vec<(&str, &str)> = vec![
            ("Action", "DescribeImages"),
            ("Version", "2014-05-26"),
            ("RegionId", "cn-hangzhou"),
        ];
        query.extend_from_slice(q);
        json!({"kind": "alibaba", "method": "GET", "path": "/", "query": query, "headers": {}, "body": "",
            "status": 200, "response": r#"{"Images":{"Image":[]},"TotalCount":0,"PageNumber":1,"PageSize":100,"RegionId":"cn-hangzhou","RequestId":"r"}"#})
    };
    let cvm = |action: &str, body: Value, response: &str| {
        json!({"kind": "cvm", "method": "POST", "path": "/", "query": [],
            "headers": {"x-tc-action": action, "x-tc-version": "2017-03-12"},
            "body": body.to_string(), "status": 200, "response": response})
    };
    let aws = |body: &str, response: &str| {
        json!({"kind": "aws", "method": "POST", "path": "/", "query": [], "headers": {}, "body": body,
            "status": 200, "response": response})
    };
    let images = r#"{"Response":{"ImageSet":[],"TotalCount":0,"RequestId":"r"}}"#;
    let cases = [
        (ali(&[("PageSize", "1000")]), "PageSize=1000 is outside"),
        (ali(&[("Status", "Available,Gone")]), "Status='Gone'"),
        (
            cvm("DescribeImages", json!({"Limit": 1000}), images),
            "Limit=1000 is outside",
        ),
        (
            cvm(
                "DescribeImages",
                json!({"Filters": [{"Name": "image-kind", "Values": ["x"]}]}),
                images,
            ),
            "Filters.Name='image-kind'",
        ),
        (
            cvm(
                "ModifyImageSharePermission",
                json!({"ImageId": "img-1", "AccountIds": ["100000000001"], "Permission": "GRANT"}),
                r#"{"Response":{"RequestId":"r"}}"#,
            ),
            "Permission='GRANT'",
        ),
        (
            aws(
                "Action=ModifyImageAttribute&Version=2016-11-15&ImageId=ami-1&Attribute=launchPermission&OperationType=grant",
                "<ModifyImageAttributeResponse><return>true</return></ModifyImageAttributeResponse>",
            ),
            "'grant' is not one of the SDK's values",
        ),
    ];
    for (ex, want) in &cases {
        let found = support::conformance::violations(std::slice::from_ref(ex));
        assert!(found.iter().any(|v| v.contains(want)), "{want}: {found:?}");
    }
    // And what the operator sends is within them.
    let fine = [
        ali(&[("PageSize", "100"), ("PageNumber", "2"), ("ImageOwnerAlias", "self")]),
        cvm(
            "DescribeImages",
            json!({"Limit": 100, "Offset": 100, "Filters": [{"Name": "image-type", "Values": ["PRIVATE_IMAGE"]}]}),
            images,
        ),
    ];
    assert_eq!(support::conformance::violations(&fine), Vec::<String>::new());
}
