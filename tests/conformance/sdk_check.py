#!/usr/bin/env python3
"""Conformance checks against the clouds' official SDKs (tests/conformance/requirements.txt).

The SDKs are the definition of each API: their request models name every operation's method,
path or Action, version, parameters and body fields; their response models name every field an
answer has; their signers sign requests. This script holds what the operator sent and what the
test stand-ins answered to those definitions, so that neither can drift from the real API.

    sdk_check.py exchanges FILE   # FILE: JSON list of {kind, method, path, query, headers, body,
                                  #   status, response}; prints each violation, exit 1 if any
    sdk_check.py sign             # stdin: JSON list of requests to sign; stdout: the SDKs' signatures
    sdk_check.py codes            # stdout: the error codes the SDKs list (Tencent's errorcodes.py
                                  #   and common codes, botocore's throttling codes)

Run with the interpreter of .tools/sdk (make tools).
"""

import base64
import datetime
import hashlib
import importlib
import inspect
import json
import re
import sys
import warnings
import xml.etree.ElementTree as ET
from urllib.parse import parse_qsl


class Violations:
    def __init__(self):
        self.items = []

    def add(self, ex, what):
        self.items.append(f"{ex.get('kind')} {ex.get('method')} {ex.get('path')} {action_of(ex)}: {what}")


def action_of(ex):
    h = {k.lower(): v for k, v in (ex.get("headers") or {}).items()}
    if h.get("x-tc-action"):
        return h["x-tc-action"]
    for k, v in ex.get("query") or []:
        if k == "Action":
            return v
    if ex.get("kind") == "aws":
        for k, v in parse_qsl(ex.get("body") or "", keep_blank_values=True):
            if k == "Action":
                return v
    return ""


def loads(text):
    try:
        return json.loads(text) if text and text.strip() else None
    except ValueError:
        return ValueError


# ---------------------------------------------------------------- documented values

# Ranges and enumerations the API references document and the SDK models do not enforce
# (their types are plain strings and integers): (kind, operation, parameter) -> ("range", lo,
# hi) with None for no bound, ("enum", values), or ("csv", values) for a comma-separated list.
# Tencent's `Filters.Name` is the name of each filter; `tag:*` stands for any tag key.
DOCUMENTED = {
    ("alibaba", "DescribeImages", "PageSize"): ("range", 1, 100),
    ("alibaba", "DescribeImages", "PageNumber"): ("range", 1, None),
    ("alibaba", "DescribeImages", "Status"): (
        "csv", {"Creating", "Waiting", "Available", "UnAvailable", "CreateFailed", "Deprecated"}),
    ("alibaba", "DescribeImages", "ImageOwnerAlias"): ("enum", {"system", "self", "others", "marketplace"}),
    ("alibaba", "DescribeImageSharePermission", "PageSize"): ("range", 1, 100),
    ("alibaba", "DescribeImageSharePermission", "PageNumber"): ("range", 1, None),
    ("cvm", "DescribeImages", "Limit"): ("range", 1, 100),
    ("cvm", "DescribeImages", "Offset"): ("range", 0, None),
    ("cvm", "DescribeImages", "Filters.Name"): ("enum", {
        "image-id", "image-type", "image-state", "image-name", "instance-type", "image-family",
        "image-name-fuzzy", "tag-key", "tag-value", "tag:*"}),
    ("cvm", "ModifyImageSharePermission", "Permission"): ("enum", {"SHARE", "CANCEL"}),
    ("huawei", "ListImages", "__imagetype"): ("enum", {"gold", "private", "shared", "market"}),
    ("huawei", "ListImages", "limit"): ("range", 1, 1000),
    ("huawei", "BatchUpdateMembers", "status"): ("enum", {"accepted", "rejected"}),
    # The discovery document gives maxResults a minimum and a default of 500, and its text a
    # most of 500.
    ("google", "compute.images.list", "maxResults"): ("range", 0, 500),
}


def documented(ex, vio, kind, op, params):
    """Hold `params` ({name: value or [values]}) to the DOCUMENTED values of `op`."""
    for (k, o, name), rule in DOCUMENTED.items():
        if k != kind or o != op or name not in params:
            continue
        values = params[name] if isinstance(params[name], list) else [params[name]]
        for v in values:
            if rule[0] == "range":
                try:
                    n = int(v)
                except (TypeError, ValueError):
                    vio.add(ex, f"{op}: {name}={v!r} is not a whole number")
                    continue
                lo, hi = rule[1], rule[2]
                if (lo is not None and n < lo) or (hi is not None and n > hi):
                    vio.add(ex, f"{op}: {name}={n} is outside the documented range {lo}..{hi if hi is not None else ''}")
            else:
                items = str(v).split(",") if rule[0] == "csv" else [v]
                allowed = rule[1]
                for it in items:
                    if it not in allowed and not (str(it).startswith("tag:") and "tag:*" in allowed):
                        vio.add(ex, f"{op}: {name}={it!r} is not one of the documented values {sorted(allowed)}")


# ---------------------------------------------------------------- Huawei (IMS v2, IAM v3)

def huawei_ops():
    """(method, path regex, operation, client class, module) for every IMS and IAM operation."""
    ops = []
    for mod_name, cls_name in [
        ("huaweicloudsdkims.v2", "ImsClient"),
        ("huaweicloudsdkiam.v3", "IamClient"),
    ]:
        mod = importlib.import_module(mod_name)
        client = getattr(mod, cls_name)
        for attr in dir(client):
            m = re.fullmatch(r"_(\w+)_http_info", attr)
            if not m:
                continue
            op = "".join(p.capitalize() for p in m.group(1).split("_"))
            req_cls = getattr(mod, op + "Request", None)
            if req_cls is None:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                info = getattr(client, attr)(req_cls())
            path = info["resource_path"]
            rx = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$"
            ops.append((info["method"], rx, op, info, mod, path))
    return ops


_HW_OPS = None


def huawei_check_model(v, model, mod, where, out):
    """Check a JSON value against a Huawei model type name (openapi_types vocabulary)."""
    if v is None:
        return
    if model in ("str",):
        if not isinstance(v, str):
            out.append(f"{where}: {json.dumps(v)} is not a string")
        return
    if model in ("int",):
        if isinstance(v, bool) or not isinstance(v, int):
            out.append(f"{where}: {json.dumps(v)} is not an integer")
        return
    if model in ("float",):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            out.append(f"{where}: {json.dumps(v)} is not a number")
        return
    if model == "bool":
        if not isinstance(v, bool):
            out.append(f"{where}: {json.dumps(v)} is not a boolean")
        return
    if model == "object":
        return
    m = re.fullmatch(r"list\[(.+)\]", model)
    if m:
        if not isinstance(v, list):
            out.append(f"{where}: expected a list, got {json.dumps(v)[:80]}")
            return
        for i, x in enumerate(v):
            huawei_check_model(x, m.group(1), mod, f"{where}[{i}]", out)
        return
    m = re.fullmatch(r"dict\((\w+), (.+)\)", model)
    if m:
        if not isinstance(v, dict):
            out.append(f"{where}: expected an object")
            return
        for k, x in v.items():
            huawei_check_model(x, m.group(2), mod, f"{where}.{k}", out)
        return
    cls = getattr(mod, model, None)
    if cls is None:
        out.append(f"{where}: the SDK has no model {model}")
        return
    if not isinstance(v, dict):
        out.append(f"{where}: expected an object ({model}), got {json.dumps(v)[:80]}")
        return
    by_json = {j: a for a, j in cls.attribute_map.items()}
    for k, x in v.items():
        attr = by_json.get(k)
        if attr is None:
            out.append(f"{where}: field {k!r} is not in the SDK model {model}")
            continue
        huawei_check_model(x, cls.openapi_types[attr], mod, f"{where}.{k}", out)


# Query parameters the IMS API reference documents and the SDK's request model lacks:
# "Querying Images" (GET /v2/cloudimages{?...,__whole_image,...}) filters full-ECS images.
HUAWEI_REFERENCE_QUERY = {"ListImages": {"__whole_image"}}


def check_huawei(ex, vio):
    global _HW_OPS
    if _HW_OPS is None:
        _HW_OPS = huawei_ops()
    method, path = ex["method"], ex["path"]
    found = [o for o in _HW_OPS if o[0] == method and re.match(o[1], path)]
    if not found:
        vio.add(ex, "no SDK operation has this method and path")
        return
    # IAM's securitytokens path is two operations, told apart by the identity method.
    if path == "/v3.0/OS-CREDENTIAL/securitytokens":
        by_agency = "assume_role" in (ex.get("body") or "")
        want = "CreateTemporaryAccessKeyByAgency" if by_agency else "CreateTemporaryAccessKeyByToken"
        found = [o for o in found if o[2] == want] or found
    # The most specific template (fewest placeholders) wins, as the router does.
    _, _, op, info, mod, template = min(found, key=lambda o: o[5].count("{"))
    public = re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()
    for cname in ("ImsClient", "IamClient"):
        c = getattr(mod, cname, None)
        if c is not None and hasattr(c, public) and "is deprecated" in inspect.getsource(getattr(c, public)):
            vio.add(ex, f"{op} is deprecated in the SDK")
    names = {q[0] for q in info["query_params"]} | HUAWEI_REFERENCE_QUERY.get(op, set())
    for k, _ in ex.get("query") or []:
        if k not in names:
            vio.add(ex, f"{op}: query parameter {k!r} is not in the SDK request ({sorted(names)[:8]}...)")
    req_cls = getattr(mod, op + "Request")
    body = loads(ex.get("body"))
    flat = dict(ex.get("query") or [])
    if isinstance(body, dict):
        flat.update({k: v for k, v in body.items() if isinstance(v, (str, int))})
    documented(ex, vio, "huawei", op, flat)
    if body is ValueError:
        vio.add(ex, f"{op}: the body is not JSON")
    elif body is not None:
        if "body" not in req_cls.openapi_types:
            vio.add(ex, f"{op}: the SDK request has no body")
        else:
            out = []
            huawei_check_model(body, req_cls.openapi_types["body"], mod, "body", out)
            for o in out:
                vio.add(ex, f"{op}: {o}")
    status = ex.get("status", 0)
    resp = loads(ex.get("response"))
    if 200 <= status < 300:
        if resp is ValueError:
            vio.add(ex, f"{op}: the answer is not JSON")
        elif resp is not None:
            out = []
            # Response models carry header fields too; the JSON body holds the others.
            huawei_check_model(resp, info["response_type"], mod, "answer", out)
            for o in out:
                vio.add(ex, f"{op}: {o}")
    elif resp is not ValueError and resp is not None:
        # The SDK reads error_code/error_msg, or error.code/error.message (huaweicloudsdkcore).
        ok = ("error_code" in resp and "error_msg" in resp) or (
            isinstance(resp.get("error"), dict) and "code" in resp["error"] and "message" in resp["error"]
        )
        if not ok:
            vio.add(ex, f"{op}: error answer without error_code/error_msg: {ex.get('response')[:120]}")


# ---------------------------------------------------------------- Alibaba (ECS 2014-05-26, RPC)

ALI_COMMON = {
    "Action", "Version", "Format", "AccessKeyId", "Signature", "SignatureMethod", "SignatureVersion",
    "SignatureNonce", "Timestamp", "SecurityToken", "SignatureType",
}


def unflatten(pairs):
    """RPC form (`Tag.1.Key=a`) back to a nested map ({"Tag": [{"Key": "a"}]})."""
    root = {}
    for k, v in pairs:
        parts = k.split(".")
        cur = root
        for i, p in enumerate(parts):
            last = i == len(parts) - 1
            nxt_is_index = not last and parts[i + 1].isdigit()
            if p.isdigit():
                idx = int(p) - 1
                while len(cur) <= idx:
                    cur.append(None)
                if last:
                    cur[idx] = v
                else:
                    if cur[idx] is None:
                        cur[idx] = [] if nxt_is_index else {}
                    cur = cur[idx]
            else:
                if last:
                    cur[p] = v
                else:
                    cur = cur.setdefault(p, [] if nxt_is_index else {})
    return root


def tea_required(cls):
    """JSON names of the fields an Alibaba model marks `This parameter is required.`"""
    src = inspect.getsource(cls.__init__)
    required, comment = [], []
    for line in src.splitlines():
        s = line.strip()
        if s.startswith("#"):
            comment.append(s)
            continue
        m = re.match(r"self\.(\w+) = \1$", s)
        if m:
            if any("This parameter is required." in c for c in comment):
                required.append(m.group(1))
        comment = []
    probe = cls()
    names = {}
    for attr in required:
        setattr(probe, attr, "x")
        before = set(cls().to_map() or {})
        after = set(probe.to_map() or {})
        setattr(probe, attr, None)
        for n in after - before:
            names[n] = attr
    return set(names)


def tea_unknown(model, data, where, out):
    """Fields of `data` the Tea model does not have (a from_map/to_map round trip drops them)."""
    back = model.from_map(data).to_map() if data is not None else {}
    tea_diff(data, back, where, out)


def tea_diff(data, back, where, out):
    if isinstance(data, dict):
        if not isinstance(back, dict):
            out.append(f"{where}: not an object in the SDK model")
            return
        for k, v in data.items():
            if k not in back:
                out.append(f"{where}.{k}: not a field of the SDK model")
            else:
                tea_diff(v, back[k], f"{where}.{k}", out)
    elif isinstance(data, list):
        if not isinstance(back, list):
            out.append(f"{where}: a list where the SDK model has {type(back).__name__}")
            return
        for i, (a, b) in enumerate(zip(data, back)):
            tea_diff(a, b, f"{where}[{i}]", out)


def tea_fields(model_cls):
    """JSON name -> (attribute, annotation) of a Tea model, read from its to_map."""
    params = inspect.signature(model_cls.__init__).parameters
    fields, pending = {}, None
    for line in inspect.getsource(model_cls.to_map).splitlines():
        m = re.search(r"result\['(\w+)'\]\s*=\s*(.*)", line)
        if m and m.group(2).strip() in ("[]", "{}"):
            pending = m.group(1)
            continue
        a = re.search(r"self\.(\w+)", line)
        if m and a:
            fields[m.group(1)] = a.group(1)
        elif pending and a:
            fields[pending] = a.group(1)
            pending = None
    return {k: (a, str(params[a].annotation)) for k, a in fields.items() if a in params}


def tea_types(model_cls, data, where, out):
    """Primitive types against the model's annotations, and nested models, recursively."""
    if not isinstance(data, dict):
        return
    from alibabacloud_ecs20140526 import models as m

    fields = tea_fields(model_cls)
    for k, v in data.items():
        if k not in fields or v is None:
            continue
        _, ann = fields[k]
        bad = (ann == "str" and not isinstance(v, str)) or (
            ann == "int" and (isinstance(v, bool) or not isinstance(v, int))
        ) or (ann == "bool" and not isinstance(v, bool)) or (
            ann == "float" and (isinstance(v, bool) or not isinstance(v, (int, float)))
        )
        if bad:
            out.append(f"{where}.{k}: {json.dumps(v)} is not of the SDK type {ann}")
        sub = re.fullmatch(r"(List\[)?main_models\.(\w+)\]?", ann)
        if sub:
            cls = getattr(m, sub.group(2), None)
            if cls is None:
                continue
            if sub.group(1) and not isinstance(v, list):
                out.append(f"{where}.{k}: the SDK model has a list")
                continue
            for x in v if isinstance(v, list) else [v]:
                tea_types(cls, x, f"{where}.{k}", out)


# The Alibaba Cloud APIs by version: ECS, and STS (workload identity, assumed roles).
ALI_APIS = {"2014-05-26": "alibabacloud_ecs20140526", "2015-04-01": "alibabacloud_sts20150401"}


def check_alibaba(ex, vio):
    from alibabacloud_tea_openapi.utils import Utils

    q = ex.get("query") or []
    qd = dict(q)
    action = qd.get("Action", "")
    if qd.get("Version") not in ALI_APIS:
        vio.add(ex, f"Version {qd.get('Version')!r} is none of the SDKs' {sorted(ALI_APIS)}")
        return
    m = importlib.import_module(ALI_APIS[qd["Version"]] + ".models")
    if action == "AssumeRoleWithOIDC" and "Signature" in qd:
        vio.add(ex, f"{action}: the SDK sends it unsigned")
    req_cls = getattr(m, action + "Request", None)
    if req_cls is None:
        vio.add(ex, f"the SDK has no action {action!r}")
        return
    mine = [(k, v) for k, v in q if k not in ALI_COMMON]
    data = unflatten(mine)
    req = req_cls().from_map(data)
    sdk_query = {k: v for k, v in Utils.query(req.to_map()).items() if v is not None}
    for k, _ in mine:
        if k not in sdk_query:
            vio.add(ex, f"{action}: parameter {k!r} is not in the SDK request")
    for r in tea_required(req_cls):
        if r not in data:
            vio.add(ex, f"{action}: required parameter {r!r} is missing")
    tags = data.get("Tag") or []
    if len(tags) > 20:
        vio.add(ex, f"{action}: {len(tags)} Tag.N entries; the API allows 20")
    documented(ex, vio, "alibaba", action, qd)
    resp = loads(ex.get("response"))
    status = ex.get("status", 0)
    if resp is ValueError:
        vio.add(ex, f"{action}: the answer is not JSON")
        return
    if 200 <= status < 300:
        body_cls = getattr(m, action + "ResponseBody")
        out = []
        tea_unknown(body_cls(), resp, "answer", out)
        tea_types(body_cls, resp, "answer", out)
        for o in out:
            vio.add(ex, f"{action}: {o}")
    elif resp is not None:
        for k in ("Code", "Message", "RequestId"):
            if k not in resp:
                vio.add(ex, f"{action}: error answer without {k}")


# ---------------------------------------------------------------- AWS (EC2 2016-11-15, query)

_EC2 = None


def ec2():
    global _EC2
    if _EC2 is None:
        import botocore.session

        _EC2 = botocore.session.get_session().get_service_model("ec2")
    return _EC2


def ec2_query_name(name, shape):
    s = shape.serialization
    if s.get("queryName"):
        return s["queryName"]
    if s.get("name"):
        return s["name"][0].upper() + s["name"][1:]
    return name


def ec2_consume(shape, prefix, params, used, where, out):
    """Rebuild the input value at `prefix` from the flattened query, marking keys used."""
    t = shape.type_name
    if t == "structure":
        val = {}
        for name, ms in shape.members.items():
            key = f"{prefix}.{ec2_query_name(name, ms)}" if prefix else ec2_query_name(name, ms)
            if key in params or any(k.startswith(key + ".") for k in params):
                v = ec2_consume(ms, key, params, used, f"{where}.{name}", out)
                if v is not None:
                    val[name] = v
        return val
    if t == "list":
        items = []
        i = 1
        while f"{prefix}.{i}" in params or any(k.startswith(f"{prefix}.{i}.") for k in params):
            items.append(ec2_consume(shape.member, f"{prefix}.{i}", params, used, f"{where}[{i}]", out))
            i += 1
        return items
    if prefix not in params:
        return None
    used.add(prefix)
    raw = params[prefix]
    # botocore's validator checks neither enumerations nor maxima: the shape's documented ones.
    if t == "string" and shape.enum and raw not in shape.enum:
        out.append(f"{where}: {raw!r} is not one of the SDK's values {shape.enum[:8]}")
    if t in ("integer", "long") and raw.lstrip("-").isdigit():
        lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
        if (lo is not None and int(raw) < lo) or (hi is not None and int(raw) > hi):
            out.append(f"{where}: {raw} is outside the SDK's range {lo}..{hi}")
    if t == "boolean":
        if raw not in ("true", "false"):
            out.append(f"{where}: {raw!r} is not a boolean")
        return raw == "true"
    if t in ("integer", "long"):
        try:
            return int(raw)
        except ValueError:
            out.append(f"{where}: {raw!r} is not an integer")
            return None
    return raw


def ec2_xml_walk(el, shape, where, out):
    t = shape.type_name
    if t == "structure":
        by_name = {}
        for name, ms in shape.members.items():
            by_name[ms.serialization.get("name", name)] = ms
        for child in el:
            tag = child.tag.split("}")[-1]
            ms = by_name.get(tag)
            if ms is None:
                out.append(f"{where}: element <{tag}> is not in the SDK shape {shape.name}")
                continue
            ec2_xml_walk(child, ms, f"{where}.{tag}", out)
    elif t == "list":
        item = shape.member.serialization.get("name", "item")
        for child in el:
            tag = child.tag.split("}")[-1]
            if tag != item:
                out.append(f"{where}: list element <{tag}>, the SDK expects <{item}>")
                continue
            ec2_xml_walk(child, shape.member, f"{where}[]", out)
    else:
        text = (el.text or "").strip()
        if t == "boolean" and text not in ("true", "false"):
            out.append(f"{where}: {text!r} is not a boolean")
        if t in ("integer", "long") and not re.fullmatch(r"-?\d+", text):
            out.append(f"{where}: {text!r} is not an integer")


_STS = None


def sts():
    global _STS
    if _STS is None:
        import botocore.session

        _STS = botocore.session.get_session().get_service_model("sts")
    return _STS


def check_sts(ex, vio, action, params):
    """STS (query protocol): the input as the EC2 one, the answer's `<{Action}Result>` against
    the output shape, errors as `<ErrorResponse><Error><Code>`."""
    import botocore.validate

    model = sts()
    if action not in model.operation_names:
        vio.add(ex, f"the SDK has no STS operation {action!r}")
        return
    op = model.operation_model(action)
    if action == "AssumeRoleWithWebIdentity" and "authorization" in {k.lower() for k in ex.get("headers") or {}}:
        vio.add(ex, f"{action}: the SDK sends it unsigned")
    used, out = set(), []
    value = ec2_consume(op.input_shape, "", params, used, "input", out)
    for k in params:
        if k not in used:
            out.append(f"parameter {k!r} is not in the SDK input shape")
    report = botocore.validate.ParamValidator().validate(value, op.input_shape)
    if report.has_errors():
        out.append("SDK validation: " + report.generate_report().replace("\n", "; "))
    status, text = ex.get("status", 0), ex.get("response") or ""
    try:
        root = ET.fromstring(text.encode())
    except ET.ParseError:
        out.append("the answer is not XML")
        root = None
    if root is not None:
        tag = root.tag.split("}")[-1]
        if 200 <= status < 300:
            result = [c for c in root if c.tag.split("}")[-1] == f"{action}Result"]
            if tag != f"{action}Response" or len(result) != 1:
                out.append(f"answer <{tag}> without one <{action}Result>")
            else:
                ec2_xml_walk(result[0], op.output_shape, "answer", out)
        elif tag != "ErrorResponse" or root.find("./{*}Error/{*}Code") is None and root.find("./Error/Code") is None:
            out.append("error answer is not <ErrorResponse><Error><Code>")
    for o in out:
        vio.add(ex, f"{action}: {o}")


def check_aws(ex, vio):
    import botocore.serialize
    import botocore.validate

    pairs = parse_qsl(ex.get("body") or "", keep_blank_values=True)
    params = dict(pairs)
    action = params.pop("Action", "")
    version = params.pop("Version", "")
    if version == sts().api_version:
        return check_sts(ex, vio, action, params)
    model = ec2()
    if version != model.api_version:
        vio.add(ex, f"Version {version!r} is not the SDK's {model.api_version}")
    if action not in model.operation_names:
        vio.add(ex, f"the SDK has no operation {action!r}")
        return
    op = model.operation_model(action)
    used, out = set(), []
    value = ec2_consume(op.input_shape, "", params, used, "input", out) if op.input_shape else {}
    for k in params:
        if k not in used:
            out.append(f"parameter {k!r} is not in the SDK input shape")
    report = botocore.validate.ParamValidator().validate(value, op.input_shape)
    if report.has_errors():
        out.append("SDK validation: " + report.generate_report().replace("\n", "; "))
    else:
        ser = botocore.serialize.create_serializer("ec2").serialize_to_request(value, op)
        sdk = {k: str(v) for k, v in ser["body"].items() if k not in ("Action", "Version")}
        for k, v in params.items():
            if k in sdk and sdk[k] != v and not (v in ("true", "false") and sdk[k].lower() == v):
                out.append(f"parameter {k}={v!r}; the SDK serializes {sdk[k]!r}")
    for o in out:
        vio.add(ex, f"{action}: {o}")
    status, text = ex.get("status", 0), ex.get("response") or ""
    try:
        root = ET.fromstring(text.encode()) if text.strip() else None
    except ET.ParseError:
        vio.add(ex, f"{action}: the answer is not XML")
        return
    if root is None:
        return
    tag = root.tag.split("}")[-1]
    if 200 <= status < 300:
        if tag != f"{action}Response":
            vio.add(ex, f"{action}: root element <{tag}>, expected <{action}Response>")
        out = []
        shape = op.output_shape
        kids = [c for c in root if c.tag.split("}")[-1] != "requestId"]
        if shape is None:
            # EC2 answers `<return>true</return>` for operations botocore models without output.
            kids = [c for c in kids if c.tag.split("}")[-1] != "return"]
            if kids:
                out.append("the SDK operation has no output, the answer has elements")
        else:
            fake = ET.Element("x")
            fake.extend(kids)
            ec2_xml_walk(fake, shape, "answer", out)
        for o in out:
            vio.add(ex, f"{action}: {o}")
    else:
        code = root.find("./Errors/Error/Code")
        if tag != "Response" or code is None or root.find("./Errors/Error/Message") is None:
            vio.add(ex, f"{action}: error answer is not <Response><Errors><Error><Code>/<Message>")


# ---------------------------------------------------------------- Tencent (API 3.0: CVM, TCR)

TC_SERVICES = {"cvm": ("tencentcloud.cvm.v20170312", "2017-03-12"), "tcr": ("tencentcloud.tcr.v20190924", "2019-09-24"),
               "sts": ("tencentcloud.sts.v20180813", "2018-08-13")}


# API 3.0 common error codes (Tencent Cloud API reference, "Common Error Codes"; reference text,
# not in the SDK's per-service errorcodes.py).
TC_COMMON = {
    "ActionOffline", "AuthFailure.InvalidAuthorization", "AuthFailure.InvalidSecretId",
    "AuthFailure.MFAFailure", "AuthFailure.SecretIdNotFound", "AuthFailure.SignatureExpire",
    "AuthFailure.SignatureFailure", "AuthFailure.TokenFailure", "AuthFailure.UnauthorizedOperation",
    "DryRunOperation", "FailedOperation", "InternalError", "InvalidAction", "InvalidParameter",
    "InvalidParameterValue", "InvalidRequest", "IpInBlacklist", "IpNotInWhitelist", "LimitExceeded",
    "MissingParameter", "NoSuchProduct", "NoSuchVersion", "RequestLimitExceeded",
    "RequestLimitExceeded.GlobalRegionUinLimitExceeded", "RequestLimitExceeded.IPLimitExceeded",
    "RequestLimitExceeded.UinLimitExceeded", "RequestSizeLimitExceeded", "ResourceInUse",
    "ResourceInsufficient", "ResourceNotFound", "ResourceUnavailable", "ResponseSizeLimitExceeded",
    "ServiceUnavailable", "UnauthorizedOperation", "UnknownParameter", "UnsupportedOperation",
    "UnsupportedProtocol", "UnsupportedRegion",
}


def tc_codes(service):
    mod = importlib.import_module(TC_SERVICES[service][0] + ".errorcodes")
    return {v for k, v in vars(mod).items() if k.isupper() and isinstance(v, str)}


def tc_deserialize(cls, data, where, out):
    """Deserialize through the SDK model; unknown fields (its own warning) and shape errors."""
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            cls()._deserialize(data)
        except Exception as e:  # the SDK cannot read this answer
            out.append(f"{where}: the SDK cannot read it: {type(e).__name__}: {e}")
        for x in w:
            msg = str(x.message)
            if "fileds are useless" in msg:
                out.append(f"{where}: fields not in the SDK model {cls.__name__}: {msg.split(' fileds')[0]}")


def tc_types(cls, data, where, out, mod):
    """Walk the model's nested objects: a field the model reads as an object must be one."""
    if not isinstance(data, dict):
        return
    src = inspect.getsource(cls._deserialize)
    for field, sub in re.findall(r'params\.get\("(\w+)"\) is not None:\s*\n\s*self\._\w+ = (?:\[\]|(\w+)\(\))', src):
        v = data.get(field)
        if v is None:
            continue
        is_list = re.search(rf'for item in params\.get\("{field}"\)', src) is not None
        if is_list and not isinstance(v, list):
            out.append(f"{where}.{field}: the SDK model has a list, the answer has {type(v).__name__}")
        elif not is_list and sub and not isinstance(v, dict):
            out.append(f"{where}.{field}: the SDK model has one {sub} object, the answer has {type(v).__name__}")
        m = re.search(rf'for item in params\.get\("{field}"\):\s*\n\s*obj = (\w+)\(\)', src)
        name = m.group(1) if m else sub
        if name and hasattr(mod, name):
            for i, x in enumerate(v if isinstance(v, list) else [v]):
                tc_types(getattr(mod, name), x, f"{where}.{field}", out, mod)


def check_tencent(ex, vio):
    h = {k.lower(): v for k, v in (ex.get("headers") or {}).items()}
    # STS (workload identity, assumed roles) beside CVM: told apart by its version.
    service = "sts" if h.get("x-tc-version") == TC_SERVICES["sts"][1] else ex["kind"]
    if service == "sts" and h.get("x-tc-action") == "AssumeRoleWithWebIdentity" and h.get("authorization") != "SKIP":
        vio.add(ex, "AssumeRoleWithWebIdentity: the SDK sends it unsigned (Authorization: SKIP)")
    modname, version = TC_SERVICES[service]
    mod = importlib.import_module(modname + ".models")
    action = h.get("x-tc-action", "")
    if h.get("x-tc-version") != version:
        vio.add(ex, f"X-TC-Version {h.get('x-tc-version')!r} is not the SDK's {version}")
    if ex.get("method") != "POST" or ex.get("path") != "/":
        vio.add(ex, "API 3.0 calls are POST /")
    req_cls = getattr(mod, action + "Request", None)
    if req_cls is None:
        vio.add(ex, f"the SDK has no action {action!r}")
        return
    body = loads(ex.get("body"))
    out = []
    if body is ValueError or not isinstance(body, dict):
        out.append("the body is not a JSON object")
    else:
        tc_deserialize(req_cls, body, "request", out)
        tc_types(req_cls, body, "request", out, mod)
        flat = {k: v for k, v in body.items() if isinstance(v, (str, int)) and not isinstance(v, bool)}
        names = [f.get("Name") for f in body.get("Filters") or [] if isinstance(f, dict)]
        if names:
            flat["Filters.Name"] = names
        documented(ex, vio, service, action, flat)
    resp = loads(ex.get("response"))
    if resp is ValueError or not isinstance(resp, dict) or not isinstance(resp.get("Response"), dict):
        out.append("the answer has no Response object")
    else:
        r = resp["Response"]
        if "Error" in r:
            code = r["Error"].get("Code", "")
            if code not in tc_codes(service) | TC_COMMON:
                out.append(f"error code {code!r} is not in the SDK's {service} errorcodes")
            if "RequestId" not in r:
                out.append("error answer without RequestId")
        else:
            tc_deserialize(getattr(mod, action + "Response"), r, "answer", out)
            tc_types(getattr(mod, action + "Response"), r, "answer", out, mod)
    for o in out:
        vio.add(ex, f"{action}: {o}")


# ---------------------------------------------------------------- Google (compute/v1 discovery)

_DISCOVERY = {}


def discovery(name):
    """A Google discovery document (compute.v1, sts.v1, iamcredentials.v1), as
    google-api-python-client ships it."""
    if name not in _DISCOVERY:
        import os
        import googleapiclient
        path = os.path.join(os.path.dirname(googleapiclient.__file__), "discovery_cache", "documents",
                            f"{name}.json")
        _DISCOVERY[name] = json.load(open(path))
    return _DISCOVERY[name]


def google_methods(node):
    for res in node.get("resources", {}).values():
        yield from res.get("methods", {}).values()
        yield from google_methods(res)


def snake_to_camel(k):
    head, *rest = k.split("_")
    return head + "".join(w.title() for w in rest)


def google_value(doc, s, v, where, ex, vio):
    """Hold a JSON value to a discovery schema: fields, types, enums."""
    if "$ref" in s:
        s = doc["schemas"][s["$ref"]]
    t = s.get("type")
    if t == "object":
        if not isinstance(v, dict):
            vio.add(ex, f"{where} is not an object")
            return
        props, more = s.get("properties"), s.get("additionalProperties")
        for k, x in v.items():
            if props is not None and k in props:
                google_value(doc, props[k], x, f"{where}.{k}", ex, vio)
            elif more is not None:
                google_value(doc, more, x, f"{where}.{k}", ex, vio)
            else:
                vio.add(ex, f"{where}.{k} is not a field of the API")
    elif t == "array":
        if not isinstance(v, list):
            vio.add(ex, f"{where} is not an array")
            return
        for i, x in enumerate(v):
            google_value(doc, s["items"], x, f"{where}[{i}]", ex, vio)
    elif t == "string":
        if not isinstance(v, str):
            vio.add(ex, f"{where} is not a string: {v!r}")
        elif "enum" in s and v not in s["enum"]:
            vio.add(ex, f"{where}={v!r} is not one of {s['enum']}")
        elif s.get("format") in ("int64", "uint64") and not re.fullmatch(r"-?[0-9]+", v):
            vio.add(ex, f"{where}={v!r} is not an {s['format']}")
    elif t == "integer":
        if not isinstance(v, int) or isinstance(v, bool):
            vio.add(ex, f"{where} is not an integer: {v!r}")
    elif t == "boolean":
        if not isinstance(v, bool):
            vio.add(ex, f"{where} is not a boolean: {v!r}")


def check_google_token(ex, vio):
    """The OAuth2 token endpoint (not in the discovery document): RFC 7523's JWT bearer grant."""
    form = dict(parse_qsl(ex.get("body") or "", keep_blank_values=True))
    if set(form) != {"grant_type", "assertion"}:
        vio.add(ex, f"token: the form has {sorted(form)}, not grant_type and assertion")
    if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
        vio.add(ex, f"token: grant_type {form.get('grant_type')!r}")
    answer = loads(ex.get("response")) or {}
    want = {"access_token", "expires_in", "token_type"} if ex["status"] == 200 else {"error", "error_description"}
    if not isinstance(answer, dict) or set(answer) - want or not set(answer) & want:
        vio.add(ex, f"token: the answer has {sorted(answer) if isinstance(answer, dict) else answer}")


def check_google(ex, vio):
    if ex["path"] == "/token":
        return check_google_token(ex, vio)
    body = loads(ex.get("body"))
    if ex["path"] == "/v1/token":
        # Google's auth libraries send the STS exchange form-encoded, in RFC 8693's snake_case
        # names; the discovery document describes the same fields in camelCase.
        doc = discovery("sts.v1")
        body = {snake_to_camel(k): v for k, v in parse_qsl(ex.get("body") or "", keep_blank_values=True)}
    elif ex["path"].endswith(":generateAccessToken"):
        doc = discovery("iamcredentials.v1")
    else:
        doc = discovery("compute.v1")
    root = "/" + doc["servicePath"]
    found = None
    for m in google_methods(doc):
        pattern = "^" + re.escape(root + m["path"]).replace(r"\{", "{").replace(r"\}", "}") + "$"
        pattern = re.sub(r"\{\\\+[^}]+\}", ".+", pattern)
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", pattern)
        if m["httpMethod"] == ex["method"] and re.match(pattern, ex["path"]):
            found = m
            break
    if found is None:
        vio.add(ex, f"no {doc['name']}/{doc['version']} method has this method and path")
        return
    op = found["id"]
    params = found.get("parameters", {})
    for k, v in ex.get("query") or []:
        p = params.get(k)
        if p is None or p.get("location") != "query":
            vio.add(ex, f"{op}: {k} is not a query parameter of the method")
            continue
        if "minimum" in p or "maximum" in p:
            try:
                n = int(v)
                if ("minimum" in p and n < int(p["minimum"])) or ("maximum" in p and n > int(p["maximum"])):
                    vio.add(ex, f"{op}: {k}={n} outside {p.get('minimum')}..{p.get('maximum')}")
            except ValueError:
                vio.add(ex, f"{op}: {k}={v!r} is not a number")
        if p.get("pattern") and not re.fullmatch(p["pattern"], v):
            vio.add(ex, f"{op}: {k}={v!r} does not match {p['pattern']}")
    documented(ex, vio, "google", op, dict(ex.get("query") or []))
    if "request" in found:
        if not isinstance(body, dict):
            vio.add(ex, f"{op}: no JSON body")
        else:
            schema = doc["schemas"][found["request"]["$ref"]]
            google_value(doc, schema, body, found["request"]["$ref"], ex, vio)
            for name, prop in schema.get("properties", {}).items():
                if op in prop.get("annotations", {}).get("required", []) and name not in body:
                    vio.add(ex, f"{op}: the required field {name} is missing")
                if name in body and prop.get("pattern") and isinstance(body[name], str) \
                        and not re.fullmatch(prop["pattern"], body[name]):
                    vio.add(ex, f"{op}: {name}={body[name]!r} does not match {prop['pattern']}")
    elif body not in (None,):
        vio.add(ex, f"{op}: takes no body")
    answer = loads(ex.get("response"))
    if 200 <= ex["status"] < 300:
        if "response" in found:
            google_value(doc, doc["schemas"][found["response"]["$ref"]], answer, found["response"]["$ref"], ex, vio)
    else:
        e = answer.get("error") if isinstance(answer, dict) else None
        if not isinstance(e, dict) or set(e) - {"code", "message", "errors", "status", "details"} \
                or not all(set(x) <= {"domain", "reason", "message", "location", "locationType"} for x in e.get("errors", [])):
            vio.add(ex, f"{op}: the error answer is not Google's error shape: {answer!r}")


# ---------------------------------------------------------------- Azure (azure-mgmt-compute)

_AZURE_OPS = None


def request_builders(module, file, url_re):
    """An azure-mgmt SDK's operations, read from its request builders: (name, method, path regex,
    api-version, query parameters). `{scope}` in a template is a resource id (slashes and all)."""
    import importlib
    import os
    src = open(os.path.join(os.path.dirname(importlib.import_module(module).__file__), "operations", file)).read()
    ops = []
    for m in re.finditer(r"\ndef build_(\w+)_request\((.*?)\n    return HttpRequest\(method=\"(\w+)\"", src, re.S):
        body = m.group(2)
        url = re.search(url_re, body)
        api = re.search(r'_params.pop\("api-version", "([^"]+)"\)', body)
        if not url:
            continue
        pattern = re.escape(url.group(1)).replace(re.escape("{scope}"), ".+")
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", pattern) + "$"
        query = set(re.findall(r'_params\["([^"]+)"\]', body))
        ops.append((m.group(1), m.group(3), pattern, api.group(1) if api else None, query))
    return ops


def azure_ops():
    """The ARM operations of azure-mgmt-compute."""
    global _AZURE_OPS
    if _AZURE_OPS is None:
        _AZURE_OPS = request_builders("azure.mgmt.compute", "_operations.py", r'_url = "([^"]+)"')
    return _AZURE_OPS


def azure_call(ex, vio, ops, bodies, sdk, also=()):
    """The operation of `ops` (among `bodies`) with the exchange's method and path, its api-version
    given once and only its query parameters (and `also`): (name, request model, answer model)."""
    found = next(((n, api, q) for n, method, pattern, api, q in ops
                  if method == ex["method"] and re.match(pattern, ex["path"]) and n in bodies), None)
    if found is None:
        vio.add(ex, f"no {sdk} operation the operator uses has this method and path")
        return None
    name, api, query = found
    q = ex.get("query") or []
    keys = [k for k, _ in q]
    if keys.count("api-version") != 1 or dict(q).get("api-version") != api:
        vio.add(ex, f"{name}: api-version {dict(q).get('api-version')!r} (the SDK's: {api}), given {keys.count('api-version')} times")
    for k in keys:
        if k not in query and k not in also:
            vio.add(ex, f"{name}: {k} is not a query parameter of the operation")
    return (name, *bodies[name])


def azure_model(name):
    from azure.mgmt.compute import models
    cls = getattr(models, name)
    cls({})  # its REST fields are set up on first use
    return cls


def azure_value(t, v, where, ex, vio):
    """Hold a JSON value to an azure-mgmt-compute type (a model, list, dict, str, int, bool)."""
    import typing
    from azure.mgmt.compute import models
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin is typing.Union:
        non_none = [a for a in args if a is not type(None)]
        models_in = [a for a in non_none if isinstance(a, type) and hasattr(a, "_attr_to_rest_field") or
                     (isinstance(a, type) and issubclass(a, models._models._Model))]
        if v is None:
            return
        if models_in and isinstance(v, dict):
            return azure_value(models_in[0], v, where, ex, vio)
        if str in non_none and isinstance(v, str):
            return
        return azure_value(non_none[0], v, where, ex, vio)
    if origin in (list, typing.List):
        if not isinstance(v, list):
            return vio.add(ex, f"{where} is not an array")
        for i, x in enumerate(v):
            azure_value(args[0], x, f"{where}[{i}]", ex, vio)
        return
    if origin in (dict, typing.Dict):
        if not isinstance(v, dict):
            return vio.add(ex, f"{where} is not an object")
        for k, x in v.items():
            azure_value(args[1], x, f"{where}.{k}", ex, vio)
        return
    if isinstance(t, type) and issubclass(t, models._models._Model):
        if not isinstance(v, dict):
            return vio.add(ex, f"{where} is not an object")
        t({})
        fields = {f._rest_name: a for a, f in t._attr_to_rest_field.items()}
        hints = typing.get_type_hints(t, globalns={**vars(models._models), "_models": models})
        for k, x in v.items():
            if k not in fields:
                vio.add(ex, f"{where}.{k} is not a field of {t.__name__}")
            else:
                azure_value(hints.get(fields[k], typing.Any), x, f"{where}.{k}", ex, vio)
        return
    if t is str and not isinstance(v, str):
        vio.add(ex, f"{where} is not a string: {v!r}")
    elif t is int and (not isinstance(v, int) or isinstance(v, bool)):
        vio.add(ex, f"{where} is not an integer: {v!r}")
    elif t is bool and not isinstance(v, bool):
        vio.add(ex, f"{where} is not a boolean: {v!r}")


# The models of the bodies and answers of the operations the operator calls.
AZURE_BODIES = {
    "gallery_image_versions_get": (None, "GalleryImageVersion"),
    "gallery_image_versions_update": ("GalleryImageVersionUpdate", "GalleryImageVersion"),
    "gallery_image_versions_list_by_gallery_image": (None, "GalleryImageVersion[]"),
}


_AZURE_ROLE_OPS = None


def azure_role_ops():
    """The role assignment operations of azure-mgmt-authorization (api-version 2022-04-01), by
    scope and name (not the by-id ones, whose template matches any path)."""
    global _AZURE_ROLE_OPS
    if _AZURE_ROLE_OPS is None:
        _AZURE_ROLE_OPS = request_builders(
            "azure.mgmt.authorization.v2022_04_01", "_role_assignments_operations.py",
            r'"template_url", "(/\{scope\}[^"]+)"')
    return _AZURE_ROLE_OPS


# The msrest models of the role assignment calls the operator makes: (request, answer).
AZURE_ROLE_BODIES = {
    "create": ("RoleAssignmentCreateParameters", "RoleAssignment"),
    "delete": (None, "RoleAssignment"),
    "list_for_scope": (None, "RoleAssignmentListResult"),
}


def msrest_value(t, v, where, ex, vio, request):
    """Hold a JSON value to an msrest type string (`str`, `[Model]`, a model name...)."""
    import datetime
    import azure.mgmt.authorization.v2022_04_01.models as models
    if v is None:
        return
    if t.startswith("[") and t.endswith("]"):
        if not isinstance(v, list):
            return vio.add(ex, f"{where} is not an array")
        for i, x in enumerate(v):
            msrest_value(t[1:-1], x, f"{where}[{i}]", ex, vio, request)
    elif t.startswith("{") and t.endswith("}"):
        if not isinstance(v, dict):
            return vio.add(ex, f"{where} is not an object")
        for k, x in v.items():
            msrest_value(t[1:-1], x, f"{where}.{k}", ex, vio, request)
    elif t == "str" and not isinstance(v, str):
        vio.add(ex, f"{where} is not a string: {v!r}")
    elif t in ("int", "long") and (not isinstance(v, int) or isinstance(v, bool)):
        vio.add(ex, f"{where} is not an integer: {v!r}")
    elif t == "bool" and not isinstance(v, bool):
        vio.add(ex, f"{where} is not a boolean: {v!r}")
    elif t == "iso-8601":
        try:
            datetime.datetime.fromisoformat(str(v))
        except ValueError:
            vio.add(ex, f"{where} is not an ISO 8601 time: {v!r}")
    elif hasattr(models, t):
        msrest_model(getattr(models, t), v, where, ex, vio, request)


def msrest_model(cls, v, where, ex, vio, request):
    """An msrest model: its flattened keys (`properties.scope`), read-only fields never sent,
    required ones always, enum fields (principalType) within the enum."""
    import azure.mgmt.authorization.v2022_04_01.models as models
    if not isinstance(v, dict):
        return vio.add(ex, f"{where} is not an object")
    tree = {}
    for attr, m in cls._attribute_map.items():
        parts = [p.replace("\\.", ".") for p in re.split(r"(?<!\\)\.", m["key"])]
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = (attr, m["type"])
    rules = getattr(cls, "_validation", {})

    def walk(node, value, at):
        if not isinstance(value, dict):
            return vio.add(ex, f"{at} is not an object")
        for k, x in value.items():
            if k not in node:
                vio.add(ex, f"{at}.{k} is not a field of {cls.__name__}")
            elif isinstance(node[k], dict):
                walk(node[k], x, f"{at}.{k}")
            else:
                attr, t = node[k]
                if request and rules.get(attr, {}).get("readonly") and x is not None:
                    vio.add(ex, f"{at}.{k} is read-only in {cls.__name__}")
                if attr == "principal_type" and x is not None and x not in [e.value for e in models.PrincipalType]:
                    vio.add(ex, f"{at}.{k} {x!r} is not a PrincipalType")
                msrest_value(t, x, f"{at}.{k}", ex, vio, request)
    walk(tree, v, where)
    if request:
        for attr, r in rules.items():
            if r.get("required"):
                keys = cls._attribute_map[attr]["key"].split(".")
                x = v
                for k in keys:
                    x = x.get(k) if isinstance(x, dict) else None
                if x is None:
                    vio.add(ex, f"{where}: {cls._attribute_map[attr]['key']} is required in {cls.__name__}")


def check_azure_roles(ex, vio):
    """A role assignment call held to azure-mgmt-authorization's request builders and models."""
    found = azure_call(ex, vio, azure_role_ops(), AZURE_ROLE_BODIES, "azure-mgmt-authorization role assignment")
    if found is None:
        return
    name, req, resp = found
    body = loads(ex.get("body"))
    if req:
        msrest_value(req, body, req, ex, vio, True)
    elif body is not None:
        vio.add(ex, f"{name}: takes no body")
    answer = loads(ex.get("response"))
    if ex["status"] == 204 and name == "delete":
        return
    if 200 <= ex["status"] < 300:
        msrest_value(resp, answer, resp, ex, vio, False)
    else:
        msrest_value("ErrorResponse", answer, "ErrorResponse", ex, vio, False)
        if not isinstance(answer, dict) or not isinstance(answer.get("error"), dict):
            vio.add(ex, f"{name}: the error answer is not ARM's error shape: {answer!r}")


def check_azure(ex, vio):
    import typing
    if "/providers/Microsoft.Authorization/roleAssignments" in ex["path"]:
        return check_azure_roles(ex, vio)
    if ex["path"].endswith("/oauth2/v2.0/token"):
        # Entra ID's token endpoint (not in the SDK): the client-credentials grant.
        form = dict(parse_qsl(ex.get("body") or "", keep_blank_values=True))
        secret = {"client_id", "client_secret", "grant_type", "scope"}
        assertion = {"client_id", "client_assertion", "client_assertion_type", "grant_type", "scope"}
        if set(form) not in (secret, assertion) or form.get("grant_type") != "client_credentials" or (
                "client_assertion" in form
                and form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"):
            vio.add(ex, f"token: the form has {sorted(form)}")
        answer = loads(ex.get("response")) or {}
        want = ({"token_type", "expires_in", "ext_expires_in", "access_token"} if ex["status"] == 200
                else {"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id"})
        if not isinstance(answer, dict) or set(answer) - want:
            vio.add(ex, f"token: the answer has {sorted(answer) if isinstance(answer, dict) else answer}")
        return
    found = azure_call(ex, vio, azure_ops(), AZURE_BODIES, "azure-mgmt-compute", also=("$skiptoken",))
    if found is None:
        return
    name, req, resp = found
    body = loads(ex.get("body"))
    if req:
        azure_value(azure_model(req), body, req, ex, vio)
    elif body is not None:
        vio.add(ex, f"{name}: takes no body")
    answer = loads(ex.get("response"))
    if 200 <= ex["status"] < 300:
        if resp.endswith("[]"):
            if not isinstance(answer, dict) or set(answer) - {"value", "nextLink"}:
                vio.add(ex, f"{name}: a page has {sorted(answer) if isinstance(answer, dict) else answer}")
            else:
                azure_value(typing.List[azure_model(resp[:-2])], answer.get("value", []), resp, ex, vio)
        else:
            azure_value(azure_model(resp), answer, resp, ex, vio)
    else:
        e = answer.get("error") if isinstance(answer, dict) else None
        if not isinstance(e, dict) or not {"code", "message"} <= set(e) or set(e) - {"code", "message", "target", "details", "innererror"}:
            vio.add(ex, f"{name}: the error answer is not ARM's error shape: {answer!r}")


CHECKS = {"huawei": check_huawei, "alibaba": check_alibaba, "aws": check_aws, "tencent": check_tencent,
          "cvm": check_tencent, "tcr": check_tencent, "google": check_google,
          "azure": check_azure}


def exchanges(path):
    data = json.load(open(path))
    vio = Violations()
    seen = {}
    for ex in data:
        if ex.get("kind") == "tencent":
            ex["kind"] = "cvm"
        if ex.get("bad_signature") or not ex.get("status"):
            continue  # refused before the API, or not answered yet (a held answer)
        CHECKS[ex["kind"]](ex, vio)
        key = (ex["kind"], ex["method"], re.sub(r"[0-9a-f-]{8,}", "*", ex["path"]), action_of(ex))
        seen[key] = seen.get(key, 0) + 1
    for k, n in sorted(seen.items()):
        print(f"checked {n:3} x {' '.join(x for x in k if x)}")
    for v in dict.fromkeys(vio.items):
        print("VIOLATION", v)
    print(f"conformance: {len(data)} exchanges, {len(set(vio.items))} violations")
    return 1 if vio.items else 0


# ---------------------------------------------------------------- signers

def sign_huawei(r):
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.sdk_request import SdkRequest
    from huaweicloudsdkcore.signer.signer import Signer

    headers = dict(r["headers"])
    req = SdkRequest(method=r["method"], schema="https", host=r["host"], resource_path=r["path"],
                     query_params=[tuple(q) for q in r["query"]], header_params=headers,
                     body=r["body"].encode() if r["body"] else "")
    cred = BasicCredentials(r["ak"], r["sk"])
    signed = Signer(cred).sign(req)
    return {"authorization": signed.header_params["Authorization"]}


def sign_alibaba(r):
    from alibabacloud_tea_openapi.utils import Utils

    return {"signature": Utils.get_rpcsignature(dict(r["query"]), r["method"], r["sk"])}


def sign_aws(r):
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials
    from unittest import mock

    creds = botocore.credentials.Credentials(r["ak"], r["sk"])
    req = botocore.awsrequest.AWSRequest(method=r["method"], url=f"https://{r['host']}{r['path']}",
                                         data=r["body"], headers=dict(r["headers"]))
    t = datetime.datetime.strptime(r["amz_date"], "%Y%m%dT%H%M%SZ")
    with mock.patch("botocore.auth.get_current_datetime", return_value=t):
        botocore.auth.SigV4Auth(creds, r["service"], r["region"]).add_auth(req)
    return {"authorization": req.headers["Authorization"]}


def sign_tencent(r):
    from tencentcloud.common.credential import Credential
    from tencentcloud.common.abstract_client import AbstractClient
    from tencentcloud.common.profile.client_profile import ClientProfile
    from tencentcloud.common.profile.http_profile import HttpProfile
    from tencentcloud.common.http.request import RequestInternal
    from unittest import mock

    hp = HttpProfile(endpoint=r["host"], reqMethod="POST")
    client = AbstractClient(Credential(r["ak"], r["sk"]), r["region"], ClientProfile(httpProfile=hp))
    client._apiVersion = r["version"]
    client._service = r["service"]
    req = RequestInternal(r["host"], "POST", "/")
    with mock.patch("time.time", return_value=float(r["timestamp"])):
        client._build_req_with_tc3_signature(r["action"], json.loads(r["body"]), req, {})
    return {"authorization": req.header["Authorization"], "body": req.data}


def sign(reqs):
    fns = {"huawei": sign_huawei, "alibaba": sign_alibaba, "aws": sign_aws, "tencent": sign_tencent}
    return [fns[r["kind"]](r) for r in reqs]


# ---------------------------------------------------------------- error codes

def codes():
    import botocore
    from botocore.retries.standard import ThrottledRetryableChecker

    retry = json.load(open(botocore.__path__[0] + "/data/_retry.json"))
    legacy = {
        d["applies_when"]["response"]["service_error_code"]
        for d in retry["definitions"].values()
        if "service_error_code" in d.get("applies_when", {}).get("response", {})
    }
    throttling = sorted(set(ThrottledRetryableChecker._THROTTLED_ERROR_CODES) | legacy)
    return {
        "cvm": sorted(tc_codes("cvm") | TC_COMMON),
        "tcr": sorted(tc_codes("tcr") | TC_COMMON),
        "aws_throttling": throttling,
    }


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "exchanges":
        return exchanges(sys.argv[2])
    if cmd == "sign":
        json.dump(sign(json.load(sys.stdin)), sys.stdout)
        return 0
    if cmd == "codes":
        json.dump(codes(), sys.stdout)
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
