"""Device files of the Ioto face: getSignedUrl with plain HTTP (what `curl -T file "$URL"` and
`curl "$URL"` send), and getCreds with botocore, AWS's own SigV4 signer and S3 client, against
the S3-compatible endpoint at /ioto/s3. Files are listed and read on /v1."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import httpx
import pytest
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.e2e.ioto import DEADLINE_S, Agent, claimed_agent, create_product
from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def agent(server: ServerProcess, admin: httpx.Client, tmp_path: Path) -> Agent:
    product = create_product(admin, "files-line")
    return claimed_agent(server, admin, product["token"], tmp_path)


def signed_url(agent: Agent, command: str, filename: str, **extra: Any) -> httpx.Response:
    body = {"id": agent.device_id, "command": command, "filename": filename, **extra}
    return agent.call("/file/getSignedUrl", body)


def s3_client(server: ServerProcess, creds: dict[str, Any], **override: str) -> BaseClient:
    session = botocore.session.get_session()
    return session.create_client(
        "s3",
        region_name=override.get("region", creds["region"]),
        endpoint_url=f"{server.http_url}/ioto/s3",
        aws_access_key_id=creds["accessKeyId"],
        aws_secret_access_key=override.get("secret", creds["secretAccessKey"]),
        aws_session_token=creds["sessionToken"],
        config=Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries={"max_attempts": 1},
        ),
    )


@pytest.fixture
def creds(agent: Agent) -> dict[str, Any]:
    response = agent.call("/device/getCreds")
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture
def s3(server: ServerProcess, creds: dict[str, Any]) -> Iterator[BaseClient]:
    client = s3_client(server, creds)
    yield client
    client.close()


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_signed_put_then_get_then_delete_with_plain_http(agent: Agent, admin: httpx.Client) -> None:
    did = agent.device_id
    data = b"temperature,21.5\n" * 100
    # the agent's own call: {api}/tok/file/getSignedUrl with `size` as a string
    put = signed_url(agent, "put", "logs/day 1.csv", mimeType="text/csv", size=str(len(data)))
    assert put.status_code == 200, put.text
    url = put.json()
    assert isinstance(url, str) and "X-Amz-Signature=" in url and "X-Amz-Expires=" in url
    # `curl -T file "$URL"`: a PUT with the body and no Content-Type
    uploaded = httpx.put(url, content=data, timeout=DEADLINE_S)
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'

    # listed on /v1, with its size and type, and readable there
    listed = admin.get(f"/v1/devices/{did}/files")
    assert listed.status_code == 200, listed.text
    assert [(f["name"], f["size"], f["contentType"]) for f in listed.json()] == [
        ("logs/day 1.csv", len(data), "text/csv")
    ]
    assert admin.get(f"/v1/devices/{did}/files/logs/day 1.csv").content == data

    # the vendor path /device/getSignedUrl with a numeric size works the same
    get = httpx.post(
        f"{agent.provision['api']}/device/getSignedUrl",
        json={"id": did, "command": "get", "filename": "logs/day 1.csv"},
        headers={"Authorization": f"Bearer {agent.provision['token']}"},
    )
    assert get.status_code == 200, get.text
    downloaded = httpx.get(get.json(), timeout=DEADLINE_S)
    assert downloaded.status_code == 200 and downloaded.content == data
    assert downloaded.headers["content-type"].startswith("text/csv")
    # a GET URL does not upload, a PUT URL does not download
    assert httpx.put(get.json(), content=b"x").status_code == 403
    assert httpx.get(url).status_code == 403

    delete = signed_url(agent, "delete", "logs/day 1.csv")
    assert httpx.delete(delete.json()).status_code == 204
    assert admin.get(f"/v1/devices/{did}/files").json() == []
    assert httpx.get(get.json()).status_code == 404


def test_signed_put_enforces_size_and_type(agent: Agent, admin: httpx.Client) -> None:
    url = signed_url(agent, "put", "a.bin", mimeType="application/octet-stream", size=10).json()
    assert httpx.put(url, content=b"x" * 11).status_code == 400  # EntityTooLarge
    assert httpx.put(url, content=b"x" * 9).status_code == 400  # shorter than declared
    wrong_type = httpx.put(url, content=b"x" * 10, headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 400, wrong_type.text
    assert admin.get(f"/v1/devices/{agent.device_id}/files").json() == []
    good = httpx.put(url, content=b"x" * 10)
    assert good.status_code == 200, good.text
    assert len(admin.get(f"/v1/devices/{agent.device_id}/files").json()) == 1
    # a tampered URL (another key) is refused
    tampered = url.replace("/a.bin?", "/b.bin?")
    assert httpx.put(tampered, content=b"x" * 10).status_code == 403


def test_signed_url_bad_requests_get_the_documented_errors(agent: Agent) -> None:
    assert signed_url(agent, "put", "x.txt").status_code == 400  # a put needs its size
    assert signed_url(agent, "copy", "x.txt", size=1).status_code == 400
    assert signed_url(agent, "get", "../escape").status_code == 400
    huge = signed_url(agent, "put", "big", size=10**12)
    assert huge.status_code == 413, huge.text
    other = signed_url(agent, "get", "x.txt", id="SOMEONE-ELSE")
    assert other.status_code == 403, other.text
    bad_token = agent.call("/file/getSignedUrl", {"command": "get", "filename": "x"}, token="nope")
    assert bad_token.status_code == 401 and bad_token.text == "Authentication failed"
    assert bad_token.headers["content-type"].startswith("text/plain")


def test_getcreds_works_with_botocore_on_the_devices_own_files(
    agent: Agent, creds: dict[str, Any], s3: BaseClient, admin: httpx.Client
) -> None:
    assert set(creds) == {"accessKeyId", "secretAccessKey", "sessionToken", "expires", "region"}
    assert creds["accessKeyId"].startswith("ASIA")
    expires = time.mktime(time.strptime(creds["expires"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert expires - time.mktime(time.gmtime()) > 20 * 60  # the agent renews 20 min before
    bucket, did = agent.provision["accountId"], agent.device_id

    s3.put_object(Bucket=bucket, Key=f"{did}/one.txt", Body=b"first", ContentType="text/plain")
    s3.put_object(Bucket=bucket, Key=f"{did}/dir/two.json", Body=b'{"a":1}')
    got = s3.get_object(Bucket=bucket, Key=f"{did}/one.txt")
    assert got["Body"].read() == b"first" and got["ContentType"] == "text/plain"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{did}/")
    assert [o["Key"] for o in listed["Contents"]] == [f"{did}/dir/two.json", f"{did}/one.txt"]
    assert {f["name"] for f in admin.get(f"/v1/devices/{did}/files").json()} == {
        "one.txt",
        "dir/two.json",
    }
    head = s3.head_object(Bucket=bucket, Key=f"{did}/dir/two.json")
    etag = hashlib.md5(b'{"a":1}').hexdigest()
    assert head["ContentLength"] == 7 and head["ETag"] == f'"{etag}"'
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{did}/", PaginationConfig={"PageSize": 1}
    )
    assert [o["Key"] for page in pages for o in page.get("Contents", [])] == [
        f"{did}/dir/two.json",
        f"{did}/one.txt",
    ]
    s3.delete_object(Bucket=bucket, Key=f"{did}/one.txt")
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=bucket, Key=f"{did}/one.txt")
    assert error_code(missing) == "NoSuchKey"

    # only its own folder: another device's key, the whole bucket, another bucket
    for kwargs in (
        {"Bucket": bucket, "Key": "OTHER/one.txt"},
        {"Bucket": "00000000-0000-0000-0000-000000000000", "Key": f"{did}/one.txt"},
    ):
        with pytest.raises(ClientError) as denied:
            s3.put_object(Body=b"x", **kwargs)
        assert error_code(denied) == "AccessDenied"
    with pytest.raises(ClientError) as everything:
        s3.list_objects_v2(Bucket=bucket)
    assert error_code(everything) == "AccessDenied"


def test_getcreds_with_a_wrong_secret_or_region_is_refused(
    server: ServerProcess, agent: Agent, creds: dict[str, Any]
) -> None:
    bucket, did = agent.provision["accountId"], agent.device_id
    for override, code in (
        ({"secret": "x" * 40}, "SignatureDoesNotMatch"),
        ({"region": "us-east-1"}, "AuthorizationHeaderMalformed"),
    ):
        client = s3_client(server, creds, **override)
        with pytest.raises(ClientError) as refused:
            client.put_object(Bucket=bucket, Key=f"{did}/x", Body=b"x")
        client.close()
        assert error_code(refused) == code, refused.value.response


def test_credentials_and_urls_die_with_a_release(
    server: ServerProcess, agent: Agent, creds: dict[str, Any], s3: BaseClient, admin: httpx.Client
) -> None:
    bucket, did = agent.provision["accountId"], agent.device_id
    s3.put_object(Bucket=bucket, Key=f"{did}/early.txt", Body=b"e")
    url = signed_url(agent, "put", "late.txt", size=1).json()
    assert admin.post("/ioto/api/device/release", json={"id": did}).status_code == 200
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key=f"{did}/late.txt", Body=b"x")
    assert error_code(refused) == "AccessDenied"
    assert httpx.put(url, content=b"x").status_code == 403
    assert agent.call("/device/getCreds").status_code == 401
    # claimed again: nothing of the old claim's files follows it
    assert admin.post("/ioto/api/device/claim", json={"id": did}).status_code == 200
    assert admin.get(f"/v1/devices/{did}/files").json() == []


def test_credentials_are_refused_after_they_expire(start_server: Any, tmp_path: Path) -> None:
    server = start_server(env={"THINGHUB_IOTO_CREDENTIALS_TTL_S": "2"})
    with server.client() as admin:
        product = create_product(admin, "ttl-line")
        agent = claimed_agent(server, admin, product["token"], tmp_path)
    creds = agent.call("/device/getCreds").json()
    client = s3_client(server, creds)
    bucket, did = agent.provision["accountId"], agent.device_id
    client.put_object(Bucket=bucket, Key=f"{did}/a", Body=b"x")  # fresh: works
    deadline = time.monotonic() + DEADLINE_S
    code = None
    while time.monotonic() < deadline:
        try:
            client.put_object(Bucket=bucket, Key=f"{did}/a", Body=b"x")
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            break
        time.sleep(0.2)
    client.close()
    assert code == "ExpiredToken"
    server.stop()


def test_v1_lists_pages_reads_and_deletes_device_files_by_role(
    server: ServerProcess, agent: Agent, s3: BaseClient, admin: httpx.Client
) -> None:
    bucket, did = agent.provision["accountId"], agent.device_id
    names = ["a.txt", "b/c.txt", "d.txt"]
    for name in names:
        s3.put_object(Bucket=bucket, Key=f"{did}/{name}", Body=name.encode())
    first = admin.get(f"/v1/devices/{did}/files", params={"limit": 2})
    assert [f["name"] for f in first.json()] == names[:2]
    cursor = first.headers["x-continuation-token"]
    rest = admin.get(f"/v1/devices/{did}/files", params={"limit": 2, "continuationToken": cursor})
    assert [f["name"] for f in rest.json()] == names[2:]
    assert "x-continuation-token" not in rest.headers
    assert admin.get(f"/v1/devices/{did}/files", params={"limit": 0}).status_code == 400
    assert admin.get(f"/v1/devices/{did}/files/b/c.txt").content == b"b/c.txt"
    assert admin.get(f"/v1/devices/{did}/files/nope.txt").status_code == 404
    viewer_token = admin.post("/v1/tokens", json={"role": "viewer"}).json()["token"]
    with server.client(viewer_token) as viewer:
        assert viewer.get(f"/v1/devices/{did}/files").status_code == 200
        assert viewer.delete(f"/v1/devices/{did}/files/a.txt").status_code == 403
    assert admin.delete(f"/v1/devices/{did}/files/a.txt").status_code == 204
    assert [f["name"] for f in admin.get(f"/v1/devices/{did}/files").json()] == names[1:]
    with pytest.raises(ClientError) as gone:
        s3.get_object(Bucket=bucket, Key=f"{did}/a.txt")
    assert error_code(gone) == "NoSuchKey"
