"""A preflight of the DVC remote when it is S3: one request with the remote's own settings (endpoint, keys,
profile, region, as DVC resolves them), so a wrong key, a missing bucket or a store that is down is one line
naming it, in seconds, before `dvc push` / `pull` / `repro` (DVC says `unexpected error` with the
store's words and no bucket name, after retries).

    python -m cliffdata.services check-remote [--remote NAME] [--repo DIR]
"""
from __future__ import annotations

import os
from pathlib import Path


class RemoteError(RuntimeError):
    """A one-line error naming the remote and what is wrong with it."""


def s3_remote(repo: str | Path = ".", name: str | None = None) -> dict | None:
    """The S3 remote `name` (default: the default remote) of the DVC project at `repo` as DVC would open it:
    name, url, bucket, prefix and the s3fs arguments; None when it is not S3 or there is none."""
    from dvc.config import Config
    from dvc.fs import get_cloud_fs

    dvc_dir = Path(repo) / ".dvc"
    if not dvc_dir.is_dir():
        raise RemoteError(f"{Path(repo).resolve()} is not a DVC project (no .dvc folder)")
    try:
        config = Config(dvc_dir=str(dvc_dir))
        name = name or config["core"].get("remote")
        if not name:
            return None
        cls, conf, path = get_cloud_fs(config, name=name)
        if cls.protocol != "s3":
            return None
        args = cls(**conf).fs_args
    except Exception as e:          # noqa: BLE001 - DVC's config errors, a missing dvc-s3: its own words
        raise RemoteError(f"DVC remote '{name or ''}': {e}") from None
    bucket, _, prefix = path.partition("/")
    return {"name": name, "url": config["remote"][name]["url"], "bucket": bucket, "prefix": prefix, "args": args}


def check_remote(repo: str | Path = ".", name: str | None = None, timeout: float = 3.0) -> str | None:
    """List one key of the remote's prefix with its settings; a line saying it answered, None when the
    remote is not S3. Raises RemoteError with one line naming the remote, the endpoint and the fault."""
    remote = s3_remote(repo, name)
    if remote is None:
        return None
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import (ClientError, ConnectTimeoutError, EndpointConnectionError,
                                         NoCredentialsError, ReadTimeoutError)
    except ImportError as e:
        raise RemoteError(f"DVC remote '{remote['name']}' is S3: its check needs boto3 ({e}): pip install boto3") from None
    args, client_kwargs = remote["args"], remote["args"].get("client_kwargs", {})
    endpoint = client_kwargs.get("endpoint_url")
    boto3.setup_default_session(profile_name=args.get("profile"))    # credentials resolved now, not cached
    key = args.get("key") or os.environ.get("AWS_ACCESS_KEY_ID") or f"of profile {args.get('profile') or 'default'}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=args.get("key"),
                          aws_secret_access_key=args.get("secret"), aws_session_token=args.get("token"),
                          region_name=client_kwargs.get("region_name"), verify=client_kwargs.get("verify"),
                          config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1},
                                        s3={"addressing_style": "path"} if endpoint else {}))
    endpoint = client.meta.endpoint_url        # the remote's, else AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, else AWS's
    where = f"DVC remote '{remote['name']}' ({remote['url']} at {endpoint})"
    try:
        client.list_objects_v2(Bucket=remote["bucket"], Prefix=remote["prefix"], MaxKeys=1)
    except NoCredentialsError:
        raise RemoteError(f"{where}: no S3 credentials: export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                          f"(for the team store: eval \"$(python -m cliffdata.services env)\")") from None
    except (EndpointConnectionError, ConnectTimeoutError):
        raise RemoteError(f"{where}: cannot connect to the S3 endpoint (refused, or no answer in "
                          f"{timeout:.0f} s): is the store up? (make services-status)") from None
    except ReadTimeoutError:
        raise RemoteError(f"{where}: the S3 endpoint did not answer within {timeout:.0f} s") from None
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        says = {"NoSuchBucket": f"bucket '{remote['bucket']}' does not exist there",
                "404": f"bucket '{remote['bucket']}' does not exist there",
                "SignatureDoesNotMatch": f"the secret key does not match access key {key}: check AWS_SECRET_ACCESS_KEY",
                "InvalidAccessKeyId": f"the store does not know access key {key}: check AWS_ACCESS_KEY_ID",
                "AccessDenied": f"access key {key} may not list bucket '{remote['bucket']}'",
                "403": f"access key {key} may not list bucket '{remote['bucket']}'"}
        message = e.response.get("Error", {}).get("Message", "")
        raise RemoteError(f"{where}: {says.get(code, message or 'refused')} ({code})") from None
    return f"{where}: bucket '{remote['bucket']}' answers with access key {key}"
