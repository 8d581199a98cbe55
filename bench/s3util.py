#!/usr/bin/env python3
"""Minimal S3 client for bench/run.sh --s3 (standard library only, AWS Signature V4, path-style URLs).

  s3util.py wait ENDPOINT TIMEOUT_S       wait until ENDPOINT accepts a signed bucket create, object put, get
                                          and delete (not just until the port answers: SeaweedFS takes a few
                                          seconds more before its volume server takes writes)
  s3util.py size ENDPOINT BUCKET PREFIX   print "BYTES OBJECTS": the sum of the sizes of all objects under
                                          PREFIX/ (ListObjectsV2), i.e. what the repository occupies as seen
                                          by an S3 client
  s3util.py upload ENDPOINT BUCKET PREFIX DIR
                                          create BUCKET if it does not exist and put every file under DIR
                                          as PREFIX/<its path below DIR> (a local repository made into an
                                          S3 one: same layout, empty directories left out)
  s3util.py requests METRICS_URL [BEFORE] print the S3 requests SeaweedFS has served so far, by type, as
                                          "GET=12,GET-range=40,LIST=3,PUT=4" (from its Prometheus counter
                                          SeaweedFS_s3_request_total, all buckets; GET-range = status 206,
                                          TYPE-CODE = status CODE >= 400); with BEFORE (an earlier output),
                                          print the difference

ENDPOINT is like http://127.0.0.1:8333. Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the
region from AWS_DEFAULT_REGION (default us-east-1).
"""
import datetime
import hashlib
import hmac
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET


def _quote(s, safe="-_.~"):
    return urllib.parse.quote(s, safe=safe)


def request(method, endpoint, path, query=None, body=b""):
    """Signed request; returns (status, body bytes). path starts with '/', query is a dict."""
    key = os.environ.get("AWS_ACCESS_KEY_ID", "")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    u = urllib.parse.urlsplit(endpoint)
    query = query or {}
    cq = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
    cpath = _quote(path, safe="/-_.~")
    now = datetime.datetime.now(datetime.timezone.utc)
    amzdate, datestamp = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    headers = {"host": u.netloc, "x-amz-content-sha256": payload_hash, "x-amz-date": amzdate}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([method, cpath, cq, "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
                           signed, payload_hash])
    scope = f"{datestamp}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amzdate, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("AWS4" + secret).encode()
    for part in (datestamp, region, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = f"AWS4-HMAC-SHA256 Credential={key}/{scope}, SignedHeaders={signed}, Signature={sig}"
    url = f"{u.scheme}://{u.netloc}{cpath}" + (f"?{cq}" if cq else "")
    req = urllib.request.Request(url, data=body if method in ("PUT", "POST") else None, method=method,
                                 headers={k: v for k, v in headers.items() if k != "host"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait(endpoint, timeout):
    bucket, deadline, last = "bench-probe", time.monotonic() + timeout, "no answer"
    while time.monotonic() < deadline:
        try:
            st, body = request("PUT", endpoint, f"/{bucket}")
            if st in (200, 409):
                st, body = request("PUT", endpoint, f"/{bucket}/probe", body=b"probe")
                if st == 200:
                    st, body = request("GET", endpoint, f"/{bucket}/probe")
                    if st == 200 and body == b"probe":
                        request("DELETE", endpoint, f"/{bucket}/probe")
                        request("DELETE", endpoint, f"/{bucket}")
                        return 0
            last = f"HTTP {st}: {body[:200].decode(errors='replace')}"
        except OSError as e:
            last = str(e)
        time.sleep(1)
    print(f"s3util: {endpoint} not ready after {timeout} s: {last}", file=sys.stderr)
    return 1


def size(endpoint, bucket, prefix):
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    total = count = 0
    token = None
    while True:
        q = {"list-type": "2", "max-keys": "1000"}
        if prefix:
            q["prefix"] = prefix
        if token:
            q["continuation-token"] = token
        st, body = request("GET", endpoint, f"/{bucket}", q)
        if st != 200:
            print(f"s3util: listing {bucket}/{prefix}: HTTP {st}: {body[:300].decode(errors='replace')}",
                  file=sys.stderr)
            return 1
        root = ET.fromstring(body)
        ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        for c in root.findall(f"{ns}Contents"):
            total += int(c.findtext(f"{ns}Size", "0"))
            count += 1
        token = root.findtext(f"{ns}NextContinuationToken")
        if root.findtext(f"{ns}IsTruncated", "false").lower() != "true" or not token:
            break
    print(total, count)
    return 0


def upload(endpoint, bucket, prefix, directory):
    st, body = request("PUT", endpoint, f"/{bucket}")
    if st not in (200, 409):
        print(f"s3util: creating bucket {bucket}: HTTP {st}: {body[:300].decode(errors='replace')}", file=sys.stderr)
        return 1
    prefix = prefix.strip("/")
    count = 0
    for root, _, files in os.walk(directory):
        for name in sorted(files):
            path = os.path.join(root, name)
            key = os.path.relpath(path, directory).replace(os.sep, "/")
            with open(path, "rb") as f:
                data = f.read()
            st, body = request("PUT", endpoint, f"/{bucket}/{prefix}/{key}" if prefix else f"/{bucket}/{key}", body=data)
            if st != 200:
                print(f"s3util: putting {key} into {bucket}: HTTP {st}: {body[:300].decode(errors='replace')}",
                      file=sys.stderr)
                return 1
            count += 1
    if count == 0:
        print(f"s3util: nothing to upload under {directory}", file=sys.stderr)
        return 1
    print(f"uploaded {count} files from {directory} to {bucket}/{prefix}")
    return 0


def requests(metrics_url, before=None):
    counts = {}
    with urllib.request.urlopen(metrics_url, timeout=30) as r:
        for line in r.read().decode(errors="replace").splitlines():
            if not line.startswith("SeaweedFS_s3_request_total{"):
                continue
            labels, _, value = line.rpartition(" ")
            lab = {}
            for part in labels[labels.index("{") + 1:labels.rindex("}")].split(","):
                k, _, v = part.partition("=")
                lab[k] = v.strip('"')
            kind, code = lab.get("type", "?"), lab.get("code", "")
            if code == "206":
                kind += "-range"
            elif code[:1] in ("4", "5"):
                kind += f"-{code}"
            counts[kind] = counts.get(kind, 0) + int(float(value))
    if before:
        for item in before.split(","):
            k, _, v = item.partition("=")
            if k:
                counts[k] = counts.get(k, 0) - int(v)
    print(",".join(f"{k}={v}" for k, v in sorted(counts.items()) if v) or "none")
    return 0


def main(argv):
    if len(argv) == 4 and argv[1] == "wait":
        return wait(argv[2], float(argv[3]))
    if len(argv) == 5 and argv[1] == "size":
        return size(argv[2], argv[3], argv[4])
    if len(argv) == 6 and argv[1] == "upload":
        return upload(argv[2], argv[3], argv[4], argv[5])
    if len(argv) in (3, 4) and argv[1] == "requests":
        return requests(argv[2], argv[3] if len(argv) == 4 and argv[3] != "none" else None)
    raise SystemExit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
