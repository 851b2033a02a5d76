"""An S3 endpoint URL fit to use, record and show: one with no credentials in it."""

from __future__ import annotations

from urllib.parse import urlsplit

#: Where S3 credentials go instead of an endpoint URL.
CREDENTIALS_GO = ("put the credentials in the S3 Secret (cluster.secrets.s3) for the pods, and in "
                  "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (environment or .env) here")


def endpoint_problem(url: str) -> str | None:
    """Why ``url`` cannot be an S3 endpoint, in words that do not repeat it; None when it can.

    A login (``user:password@``) or a query string is refused rather than stripped: boto3
    signs every request with the access key and drops a URL's login unused, so the login
    could only end up in run.json, the Jobs and the logs; stripped, it would leave a config
    that seems to say how to log in and does not.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced "[" in an IPv6 host
        return "is not a URL; expected http(s)://host[:port]"
    if "@" in parts.netloc or parts.query:
        return f"must not hold credentials (a user:password@ or a query string); {CREDENTIALS_GO}"
    return None
