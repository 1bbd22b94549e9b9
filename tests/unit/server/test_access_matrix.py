"""Every route of the OpenAPI schema × {owner, another member, viewer, admin, anonymous} × {private, shared}:
each answer checked against the access policy (services/access.py), with sign-in on.

The routes come from the app's own schema, so a route added later fails here until it is given a rule in RULES.
"Allowed" means access was granted: the answer may still refuse for another reason (409 for a model still in use,
422 for an incomplete body), but never 401/403, nor the 404 that hides private work. "Denied" means exactly the
expected refusal; a 2xx there is an unexpected success. No answer may be a 5xx. The two WebSockets (not in
OpenAPI) are checked at the end."""

from __future__ import annotations

import io
import itertools
import json
import zipfile
from collections import Counter
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.websockets import WebSocketDisconnect

ADMIN, PASSWORD = "root", "correct horse battery"
ROLES = ("owner", "other", "viewer", "admin", "anonymous")
VISIBILITIES = ("private", "shared")
DENIED_HIDDEN = "hidden"  # 404 "... does not exist" / "not found": private work is not revealed
DENIED_FORBIDDEN = "forbidden"  # 403
DENIED_ANONYMOUS = "anonymous"  # 401
ALLOWED = "allowed"
UNREACHABLE_URL = "http://127.0.0.1:9/v1"  # loopback, nothing listens: a connection test fails fast
UNREACHABLE_HOOK = "http://127.0.0.1:9/hook"  # the same, for a notification channel's test message


# ---- the expected answers -----------------------------------------------------------------------------------
def signed_in(role: str, visibility: str) -> str:
    return DENIED_ANONYMOUS if role == "anonymous" else ALLOWED


def public(role: str, visibility: str) -> str:
    return ALLOWED


def admin_only(role: str, visibility: str) -> str:
    return {"admin": ALLOWED, "anonymous": DENIED_ANONYMOUS}.get(role, DENIED_FORBIDDEN)


def create(role: str, visibility: str) -> str:
    return {"viewer": DENIED_FORBIDDEN, "anonymous": DENIED_ANONYMOUS}.get(role, ALLOWED)


def read(role: str, visibility: str) -> str:
    if role == "anonymous":
        return DENIED_ANONYMOUS
    if visibility == "private" and role in ("other", "viewer"):
        return DENIED_HIDDEN
    return ALLOWED


def change(role: str, visibility: str) -> str:
    if role == "anonymous":
        return DENIED_ANONYMOUS
    if role in ("owner", "admin"):
        return ALLOWED
    return DENIED_HIDDEN if visibility == "private" else DENIED_FORBIDDEN


def use(role: str, visibility: str) -> str:
    """Make the server work with something readable (test a model's connection): members who can read it."""
    if role == "viewer":
        return DENIED_FORBIDDEN
    return read(role, visibility)


def run_with(role: str, visibility: str) -> str:
    """Start an evaluation of the world's model and dataset: members who can read both (others are told the ids
    do not exist, 422)."""
    if role in ("viewer", "anonymous"):
        return create(role, visibility)
    return "unknown ids" if read(role, visibility) == DENIED_HIDDEN else ALLOWED


def own_token(role: str, visibility: str) -> str:
    if role == "anonymous":
        return DENIED_ANONYMOUS
    return ALLOWED if role in ("owner", "admin") else DENIED_HIDDEN


A = "/api/v1"
RULES = {
    ("GET", f"{A}/health"): public,
    ("POST", f"{A}/auth/login"): public,
    ("POST", f"{A}/auth/register"): public,
    ("GET", f"{A}/auth/sso"): public,
    ("GET", f"{A}/auth/sso/login"): public,
    ("GET", f"{A}/auth/sso/callback"): public,
    ("GET", f"{A}/auth/me"): signed_in,
    ("POST", f"{A}/auth/logout"): signed_in,
    ("POST", f"{A}/auth/password"): signed_in,
    ("GET", f"{A}/users"): admin_only,
    ("POST", f"{A}/users"): admin_only,
    ("PATCH", f"{A}/users/{{user_id}}"): admin_only,
    ("GET", f"{A}/audit"): admin_only,
    ("GET", f"{A}/tokens"): signed_in,
    ("POST", f"{A}/tokens"): signed_in,
    ("DELETE", f"{A}/tokens/{{token_id}}"): own_token,
    # Notification channels are their owner's (administrators may manage them); no visibility of their own.
    ("GET", f"{A}/notification-channels"): signed_in,
    ("POST", f"{A}/notification-channels"): create,
    ("GET", f"{A}/notification-channels/kinds"): signed_in,
    ("GET", f"{A}/notification-channels/{{channel_id}}"): own_token,
    ("PATCH", f"{A}/notification-channels/{{channel_id}}"): own_token,
    ("DELETE", f"{A}/notification-channels/{{channel_id}}"): own_token,
    ("POST", f"{A}/notification-channels/{{channel_id}}/test"): own_token,
    ("GET", f"{A}/notification-deliveries"): signed_in,
    ("GET", f"{A}/models"): signed_in,
    ("POST", f"{A}/models"): create,
    ("POST", f"{A}/models/test"): create,
    ("GET", f"{A}/models/{{model_id}}"): read,
    ("PATCH", f"{A}/models/{{model_id}}"): change,
    ("DELETE", f"{A}/models/{{model_id}}"): change,
    ("POST", f"{A}/models/{{model_id}}/test"): use,
    ("GET", f"{A}/datasets"): signed_in,
    ("POST", f"{A}/datasets"): create,
    ("GET", f"{A}/datasets/builtin"): signed_in,
    ("POST", f"{A}/datasets/builtin/{{config}}"): create,
    ("GET", f"{A}/datasets/builtin/{{config}}/settings"): signed_in,
    ("POST", f"{A}/datasets/validate"): create,
    ("GET", f"{A}/datasets/upload-rules"): signed_in,
    ("GET", f"{A}/datasets/builtin/benchmarks"): signed_in,
    ("GET", f"{A}/datasets/packages"): admin_only,
    ("POST", f"{A}/datasets/packages"): admin_only,
    ("POST", f"{A}/datasets/packages/from-path"): admin_only,
    ("GET", f"{A}/datasets/packages/{{import_id}}"): admin_only,
    ("GET", f"{A}/datasets/{{dataset_id}}"): read,
    ("PATCH", f"{A}/datasets/{{dataset_id}}"): change,
    ("DELETE", f"{A}/datasets/{{dataset_id}}"): change,
    ("GET", f"{A}/datasets/{{dataset_id}}/preview"): read,
    ("POST", f"{A}/evaluations"): run_with,
    ("GET", f"{A}/evaluations"): signed_in,
    ("GET", f"{A}/evaluations/{{evaluation_id}}"): read,
    ("PATCH", f"{A}/evaluations/{{evaluation_id}}"): change,
    ("DELETE", f"{A}/evaluations/{{evaluation_id}}"): change,
    ("POST", f"{A}/evaluations/{{evaluation_id}}/cancel"): change,
    ("POST", f"{A}/evaluations/{{evaluation_id}}/retry"): change,
    ("GET", f"{A}/evaluations/{{evaluation_id}}/logs"): read,
    ("GET", f"{A}/evaluations/{{evaluation_id}}/results"): read,
    ("GET", f"{A}/evaluations/{{evaluation_id}}/samples"): read,
    ("GET", f"{A}/evaluations/{{evaluation_id}}/samples/export"): read,
    ("POST", f"{A}/evaluations/{{evaluation_id}}/rerun"): use,  # a new evaluation of the caller's own
    ("POST", f"{A}/evaluations/{{evaluation_id}}/rescore"): use,  # a new evaluation of the caller's own
    ("GET", f"{A}/evaluations/{{evaluation_id}}/export"): read,
    ("GET", f"{A}/compare"): signed_in,
    ("GET", f"{A}/leaderboard"): signed_in,
    ("GET", f"{A}/compare/suggested"): signed_in,
    ("GET", f"{A}/paired"): read,  # the world's evaluation paired with itself: read access decides first
    ("GET", f"{A}/paired/samples"): read,
    ("GET", f"{A}/paired/samples/export"): read,
    ("GET", f"{A}/schedules"): signed_in,
    ("POST", f"{A}/schedules"): run_with,  # its request's models and datasets must be readable, as for a run
    ("GET", f"{A}/schedules/preview"): signed_in,
    ("GET", f"{A}/schedules/{{schedule_id}}"): read,
    ("PATCH", f"{A}/schedules/{{schedule_id}}"): change,
    ("DELETE", f"{A}/schedules/{{schedule_id}}"): change,
    ("POST", f"{A}/schedules/{{schedule_id}}/run-now"): change,  # a run owned by the schedule's owner
    ("PUT", f"{A}/schedules/{{schedule_id}}/baseline"): change,
    # Prometheus' default path, outside the API prefix: administrators, or the scraper's AIEVAL_METRICS_TOKEN
    # (tests/unit/server/test_metrics_access.py)
    ("GET", "/metrics"): admin_only,
}
# Lists: the world's private things must not be in what another member or a viewer sees (and must be in the
# owner's and the admin's list).
LISTS = {f"{A}/models": "model", f"{A}/datasets": "dataset", f"{A}/evaluations": "evaluation",
         f"{A}/schedules": "schedule"}
# Run last within a world: they end the session or remove the things the other requests use.
LAST = [("DELETE", f"{A}/schedules/{{schedule_id}}"), ("DELETE", f"{A}/evaluations/{{evaluation_id}}"), ("DELETE", f"{A}/models/{{model_id}}"),
        ("DELETE", f"{A}/datasets/{{dataset_id}}"), ("DELETE", f"{A}/tokens/{{token_id}}"),
        ("DELETE", f"{A}/notification-channels/{{channel_id}}"),
        ("POST", f"{A}/auth/logout")]


def mcq_file(tag: str) -> bytes:
    rows = [{"question": f"{tag} {i}?", "A": "a", "B": "b", "C": "c", "D": "d", "answer": "A"} for i in range(4)]
    return "\n".join(json.dumps(row) for row in rows).encode()


@dataclass
class World:
    """What the owner made for one (role, visibility) check: every id a path may need."""

    model_id: int
    model_name: str
    dataset_id: int
    dataset_name: str
    evaluation_id: int
    evaluation_name: str
    token_id: int
    user_id: int
    schedule_id: int
    schedule_name: str


class Matrix:
    def __init__(self, client: TestClient):
        self.client = client
        self.tokens: dict[str, str] = {}
        self.user_ids: dict[str, int] = {}
        self.counter = itertools.count()

    # ---- callers ------------------------------------------------------------------------------------------------
    def sign_in(self, username: str) -> str:
        response = self.client.post(f"{A}/auth/login", json={"username": username, "password": PASSWORD})
        assert response.status_code == 200, response.text
        token = response.cookies["aieval_session"]
        self.client.cookies.clear()  # each request says who it is by its own header
        return token

    def headers(self, role: str) -> dict[str, str]:
        if role == "anonymous":
            return {}
        if role not in self.tokens:  # signed in again after a logout
            self.tokens[role] = self.sign_in(ADMIN if role == "admin" else role)
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def setup_users(self) -> None:
        for role in ("owner", "other", "viewer"):
            response = self.client.post(f"{A}/users", headers=self.headers("admin"), json={
                "username": role, "password": PASSWORD, "role": "viewer" if role == "viewer" else "member"})
            assert response.status_code == 201, response.text
            self.user_ids[role] = response.json()["id"]

    # ---- the owner's things -------------------------------------------------------------------------------------
    def unique(self, stem: str) -> str:
        return f"{stem}-{next(self.counter)}"

    def world(self, visibility: str) -> World:
        owner = self.headers("owner")
        model_name = self.unique("model")
        model = self.client.post(f"{A}/models", headers=owner, json={
            "name": model_name, "kind": "openai", "base_url": UNREACHABLE_URL, "model": "m", "visibility": visibility})
        assert model.status_code == 201, model.text
        dataset_name = self.unique("dataset")
        dataset = self.client.post(f"{A}/datasets", headers=owner, data={"name": dataset_name, "visibility": visibility},
                                   files={"file": ("quiz.jsonl", io.BytesIO(mcq_file(dataset_name)))})
        assert dataset.status_code == 201, dataset.text
        evaluation_name = self.unique("evaluation")
        evaluation = self.client.post(f"{A}/evaluations", headers=owner, json={
            "name": evaluation_name, "model_ids": [model.json()["id"]], "dataset_ids": [dataset.json()["dataset"]["id"]],
            "visibility": visibility})
        assert evaluation.status_code == 201, evaluation.text
        token = self.client.post(f"{A}/tokens", headers=owner, json={"name": self.unique("token"), "scope": "read"})
        assert token.status_code == 201, token.text
        schedule_name = self.unique("schedule")
        schedule = self.client.post(f"{A}/schedules", headers=owner, json={
            "name": schedule_name, "cron": "0 3 * * *", "visibility": visibility,
            "request": {"model_ids": [model.json()["id"]], "dataset_ids": [dataset.json()["dataset"]["id"]]}})
        assert schedule.status_code == 201, schedule.text
        return World(model.json()["id"], model_name, dataset.json()["dataset"]["id"], dataset_name,
                     evaluation.json()["id"], evaluation_name, token.json()["id"], self.user_ids["owner"],
                     schedule.json()["id"], schedule_name)

    def notification_channel_id(self, world: World) -> int:
        """The owner's notification channel in this world, made on first use (deleted among the LAST requests)."""
        channels = self.__dict__.setdefault("_notification_channels", {})
        if world.evaluation_id not in channels:
            response = self.client.post(f"{A}/notification-channels", headers=self.headers("owner"), json={
                "name": self.unique("channel"), "kind": "webhook", "url": UNREACHABLE_HOOK, "secret": "s3cret-value"})
            assert response.status_code == 201, response.text
            channels[world.evaluation_id] = response.json()["id"]
        return channels[world.evaluation_id]

    def data_import_id(self) -> str:
        """An import of a tiny data package made once by the admin: what GET /datasets/packages/{id} shows."""
        if not hasattr(self, "_data_import_id"):
            package = io.BytesIO()
            with zipfile.ZipFile(package, "w") as bundle:
                bundle.writestr("matrix_probe/test.jsonl", '{"question": "q", "answer": "a"}\n')
            response = self.client.post(f"{A}/datasets/packages", headers=self.headers("admin"),
                                        files={"file": ("matrix_probe.zip", package.getvalue())})
            assert response.status_code == 202, response.text
            self._data_import_id = response.json()["id"]
        return self._data_import_id

    # ---- one request --------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, role: str, world: World):
        url = (path.replace("{model_id}", str(world.model_id)).replace("{dataset_id}", str(world.dataset_id))
               .replace("{evaluation_id}", str(world.evaluation_id)).replace("{token_id}", str(world.token_id))
               .replace("{user_id}", str(world.user_id)).replace("{config}", "no_such_config_gen")
               .replace("{schedule_id}", str(world.schedule_id)))
        if "{channel_id}" in url:
            url = url.replace("{channel_id}", str(self.notification_channel_id(world)))
        if "{import_id}" in url:
            url = url.replace("{import_id}", self.data_import_id())
        kwargs: dict = {"headers": self.headers(role)}
        params: dict = {}
        if path == f"{A}/compare":
            params = {"model_ids": [world.model_id]}
        elif path.startswith(f"{A}/paired"):
            params = {"a": world.evaluation_id, "b": world.evaluation_id, "dataset": world.dataset_name}
        elif path == f"{A}/models" and method == "POST" or path == f"{A}/models/test":
            kwargs["json"] = {"name": self.unique("made"), "kind": "openai", "base_url": UNREACHABLE_URL, "model": "m"}
        elif path in (f"{A}/datasets", f"{A}/datasets/validate") and method == "POST":
            name = self.unique("upload")
            kwargs["data"] = {"name": name}
            kwargs["files"] = {"file": ("quiz.jsonl", io.BytesIO(mcq_file(name)))}
        elif path == f"{A}/schedules/preview":
            params = {"cron": "*/15 * * * *", "timezone": "Asia/Shanghai"}
        elif path == f"{A}/schedules" and method == "POST":
            kwargs["json"] = {"name": self.unique("schedule"), "cron": "@daily",
                              "request": {"model_ids": [world.model_id], "dataset_ids": [world.dataset_id]}}
        elif path.endswith("/baseline"):
            kwargs["json"] = {"evaluation_id": world.evaluation_id}  # queued, not succeeded: 409 once allowed
        elif path.endswith("/rescore"):
            kwargs["json"] = {"scorer": "contains"}
        elif path == f"{A}/evaluations" and method == "POST":
            kwargs["json"] = {"model_ids": [world.model_id], "dataset_ids": [world.dataset_id]}
        elif path == f"{A}/tokens" and method == "POST":
            kwargs["json"] = {"name": self.unique("token"), "scope": "read"}
        elif path == f"{A}/users" and method == "POST":
            kwargs["json"] = {"username": self.unique("someone"), "password": PASSWORD, "role": "viewer"}
        elif path == f"{A}/notification-channels" and method == "POST":
            kwargs["json"] = {"name": self.unique("channel"), "kind": "slack", "url": UNREACHABLE_HOOK}
        elif path == f"{A}/notification-channels/{{channel_id}}" and method == "PATCH":
            kwargs["json"] = {"name": self.unique("renamed"), "events": ["gate_failed"]}
        elif method == "PATCH":
            kwargs["json"] = {"display_name": "Renamed"} if "/users/" in path else {"visibility": "shared"} \
                if role in ("owner", "admin") else {"name": self.unique("renamed")}
        elif method == "POST" and path.endswith(("/login", "/register", "/password")):
            kwargs["json"] = {}
        response = self.client.request(method, url, params=params, **kwargs)
        if method == "POST" and path == f"{A}/auth/logout" and role != "anonymous":
            self.tokens.pop(role, None)
        return response


def classify(response, world: World) -> str:
    if response.status_code == 401:
        return DENIED_ANONYMOUS
    if response.status_code == 403:
        return DENIED_FORBIDDEN
    if response.status_code == 404 and response.json().get("detail", "").endswith(("does not exist", "not found")):
        return DENIED_HIDDEN
    if response.status_code == 422 and response.json().get("detail", "").startswith(("unknown model", "unknown dataset")):
        return "unknown ids"
    return ALLOWED


@pytest.fixture
def matrix(settings):
    from aieval_server.main import create_app

    auth = settings.model_copy(update={"auth_enabled": True, "initial_admin_username": ADMIN,
                                       "initial_admin_password": SecretStr(PASSWORD),
                                       "login_failures_per_address": 10_000})
    with TestClient(create_app(auth)) as client:
        matrix = Matrix(client)
        matrix.setup_users()
        yield matrix


def test_every_route_for_every_role_answers_as_the_access_policy_says(matrix):
    app = matrix.client.app
    app.openapi_schema = None
    operations = [(method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item]
    unclassified = [op for op in operations if op not in RULES]
    assert not unclassified, f"give these routes a rule in RULES: {unclassified}"
    ordered = [op for op in operations if op not in LAST] + [op for op in LAST if op in operations]

    checked, unexpected_successes, wrong = 0, [], []
    for role, visibility in itertools.product(ROLES, VISIBILITIES):
        world = matrix.world(visibility)
        for method, path in ordered:
            response = matrix.request(method, path, role, world)
            expected = RULES[(method, path)](role, visibility)
            got = classify(response, world)
            checked += 1
            assert response.status_code < 500, (method, path, role, visibility, response.text)
            if got != expected:
                wrong.append((method, path, role, visibility, expected, response.status_code, response.text[:200]))
                if expected != ALLOWED and response.is_success:
                    unexpected_successes.append((method, path, role, visibility))
            if path in LISTS and method == "GET" and response.is_success:
                name = getattr(world, f"{LISTS[path]}_name")
                hidden = visibility == "private" and role in ("other", "viewer")
                assert (name in response.text) is not hidden, (path, role, visibility)
    print(f"access matrix: {len(operations)} operations × {len(ROLES)} callers × {len(VISIBILITIES)} visibilities "
          f"= {checked} requests; unexpected successes: {len(unexpected_successes)}; "
          f"answers by kind: {dict(Counter(RULES[op](r, v) for op in ordered for r in ROLES for v in VISIBILITIES))}")
    assert not wrong, "\n".join(map(str, wrong))
    assert not unexpected_successes


def test_live_sockets_show_private_work_to_its_owner_only(matrix):
    world = matrix.world("private")
    socket_url = f"{A}/evaluations/{world.evaluation_id}/ws"
    for role in ("owner", "admin"):
        with matrix.client.websocket_connect(socket_url, headers=matrix.headers(role)) as socket:
            assert socket.receive_json()["evaluation"]["name"] == world.evaluation_name
    for role in ("other", "viewer"):
        with matrix.client.websocket_connect(socket_url, headers=matrix.headers(role)) as socket:
            assert socket.receive_json() == {"type": "error",
                                             "detail": f"evaluation {world.evaluation_id} does not exist"}
            with pytest.raises(WebSocketDisconnect) as closed:
                socket.receive_json()
            assert closed.value.code == 4404
    shared = matrix.world("shared")
    for role, sees_private in (("owner", True), ("admin", True), ("other", False), ("viewer", False)):
        with matrix.client.websocket_connect(f"{A}/evaluations/ws", headers=matrix.headers(role)) as socket:
            names = [item["name"] for item in socket.receive_json()["items"]]
            assert shared.evaluation_name in names, role
            assert (world.evaluation_name in names) is sees_private, role
