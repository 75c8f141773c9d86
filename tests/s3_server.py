"""A real S3-compatible server on 127.0.0.1 (moto's), with one bucket, for the object-storage tests."""

from __future__ import annotations

import logging

import boto3
from moto.server import ThreadedMotoServer

from schemas.settings import ObjectStoreSettings

ACCESS_KEY_ID = "cropsearch-test"
SECRET_ACCESS_KEY = "cropsearch-test-secret"
REGION = "us-east-1"


class LocalS3Server:
    """Start with `LocalS3Server(bucket)`; `settings` reaches it; `keys()` lists what was stored; `close()` stops it."""

    def __init__(self, bucket: str) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.bucket = bucket
        self.settings = ObjectStoreSettings(
            s3_endpoint=self.endpoint,
            s3_region=REGION,
            s3_access_key_id=ACCESS_KEY_ID,
            s3_secret_access_key=SECRET_ACCESS_KEY,
            s3_allow_http=True,
        )
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            region_name=REGION,
        )
        self.client.create_bucket(Bucket=bucket)

    def keys(self, prefix: str = "") -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]

    def crop_files(self, prefix: str) -> list[str]:
        """The stored JPEGs; pyarrow leaves an empty `folder/` marker where it deleted a folder's last file."""
        return [key for key in self.keys(prefix) if key.endswith(".jpg")]

    def close(self) -> None:
        self._server.stop()
