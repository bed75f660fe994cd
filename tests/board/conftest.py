"""What the board's API tests share: a test client speaking to /api/v1/ with a token."""

import json
import uuid

import pytest
from django.test import Client

from accounts.services import api_token_create

# `key=NEW_KEY` (the default): a fresh Idempotency-Key for the request; None: no header.
NEW_KEY = object()


class ApiClient:
    """The test client speaking to /api/v1/ with a bearer token (or none)."""

    def __init__(self, client: Client, token: str | None) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def post(self, path: str, body=None, *, key=NEW_KEY, headers: dict | None = None,
             raw: str | None = None):
        headers = {**self.headers, **(headers or {})}
        if key is NEW_KEY:
            key = str(uuid.uuid4())
        if key is not None:
            headers["Idempotency-Key"] = key
        data = raw if raw is not None else (json.dumps(body) if body is not None else "")
        return self.client.post(f"/api/v1{path}", data=data, content_type="application/json",
                                headers=headers)

    def get(self, path: str):
        return self.client.get(f"/api/v1{path}", headers=self.headers)


@pytest.fixture
def api_as(client):
    """api_as(user): an ApiClient with a new token of that user."""

    def login(user) -> ApiClient:
        _, token = api_token_create(user=user, name="test")
        return ApiClient(client, token)

    return login
