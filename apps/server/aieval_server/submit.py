"""`aieval submit`: run an EvalSpec on a server (for CI pipelines) and exit with what it found.

    aieval submit SPEC.yaml --server URL [--fail-under SCORE] [--schedule ID] [--no-wait] [--json]

The spec is the one `aieval run` reads. Its models are found on the server by name (and must have the same
settings there) or registered; its custom dataset files are uploaded (the server keeps one copy per content, so a
second submit reuses it); its built-in datasets are named. Then the evaluation is created and followed.

A client of the server's public API only: it imports the engine's spec and nothing that touches the database.
Exit codes: 0 succeeded (and every score at or above --fail-under), 1 the evaluation failed, was cancelled or
timed out, 2 the spec or the command is wrong or the server refused it, 3 a score is below --fail-under, 4 the gate of
the schedule named by --schedule failed (its reasons are printed).

Authentication: a token from AIEVAL_TOKEN or from the config file (`$AIEVAL_CONFIG`, else
~/.config/aieval/config.toml: `[servers."<url>"] token = "..."`), sent as `Authorization: Bearer`. Never from a
command-line flag: it would end up in the shell history and in the process list.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from aieval_engine.cli import progress_columns, score_table
from aieval_engine.spec import (
    BuiltinDatasetSpec,
    CustomDatasetSpec,
    EndpointModelSpec,
    EvalSpec,
    SpecError,
    load_spec,
    parse_spec,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover (Python 3.10)
    import tomli as tomllib

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_BELOW_THRESHOLD, EXIT_GATE_FAILED = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130
TOKEN_ENV = "AIEVAL_TOKEN"
CONFIG_ENV = "AIEVAL_CONFIG"
DEFAULT_CONFIG = Path("~/.config/aieval/config.toml")
SIGN_IN_MESSAGE = ("the server requires sign-in: create a personal API token with scope run on the Tokens page "
                   f"(or POST /api/v1/tokens) and set {TOKEN_ENV}")
# While following an evaluation, the server may restart (a deployment): keep asking this long before giving up.
UNREACHABLE_GRACE_S = 120.0
# The gate is checked by the worker right after the run's success is recorded: wait this long for its verdict.
GATE_WAIT_S = 300.0
# Every engine model field the server keeps as the model's settings, apart from these: the name is how the model is
# found, and keys are never part of a model's settings (the server stores them encrypted; api_key_env is read here).
NOT_SETTINGS = {"name", "api_key", "api_key_env"}


class SubmitError(Exception):
    """Nothing was (or can be) evaluated: a wrong spec or command, an unreachable server, or a refusal. Exit 2."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.message, self.problems = message, problems or []


def add_submit_command(commands) -> None:
    submit = commands.add_parser(
        "submit", help="run a spec's evaluation on a server and exit with its outcome (for CI pipelines)",
        description="Register the spec's models and upload its datasets on the server when they are not there yet, "
                    "start the evaluation and follow it. Exit codes: 0 succeeded, 1 the evaluation failed, was "
                    "cancelled or timed out, 2 invalid spec or command or refused by the server, 3 a score is "
                    "below --fail-under, 4 the gate of the --schedule failed. Sign-in: a token in {TOKEN_ENV} or in the config file ({CONFIG_ENV}, "
                    f"default {DEFAULT_CONFIG}), never on the command line.")
    submit.add_argument("spec", help="YAML or JSON EvalSpec (the same as `aieval run`)")
    submit.add_argument("--server", default=os.environ.get("AIEVAL_SERVER"), metavar="URL",
                        help="the server's address, e.g. http://eval.example.com:8000 (env AIEVAL_SERVER)")
    submit.add_argument("--fail-under", type=float, default=None, metavar="SCORE",
                        help="exit 3 when any score is below SCORE (scores are 0-100)")
    submit.add_argument("--schedule", type=int, default=None, metavar="ID",
                        help="gate the run like a run of schedule ID: compared with its baseline and checked against "
                             "its gate rules once it succeeds; exit 4 when the gate fails")
    submit.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                        help="follow the evaluation to its end (default); --no-wait only starts it")
    submit.add_argument("--json", action="store_true", help="print machine-readable results on stdout")
    submit.add_argument("--poll-interval", type=float, default=1.0, help=argparse.SUPPRESS)
    submit.set_defaults(handler=_cmd_submit)


def _cmd_submit(args) -> int:
    console = Console(stderr=args.json)
    if not args.server:
        return _refuse(console, SubmitError("--server URL is required (or set AIEVAL_SERVER)"))
    if args.poll_interval <= 0:
        return _refuse(console, SubmitError("--poll-interval must be positive"))
    if args.fail_under is not None and args.fail_under != args.fail_under:  # NaN compares below nothing
        return _refuse(console, SubmitError("--fail-under must be a number"))
    try:
        spec = load_spec(args.spec)
        plan = plan_submission(spec, dict(os.environ))
        server = server_root(args.server)
        token = find_token(server, dict(os.environ))
    except SpecError as exc:
        return _refuse(console, SubmitError(f"{args.spec} cannot be submitted", exc.problems))
    except SubmitError as exc:
        return _refuse(console, exc)
    try:
        with ServerClient(server, token) as client:
            return Submission(client, plan, console, as_json=args.json, fail_under=args.fail_under,
                              wait=args.wait, poll_interval=args.poll_interval, schedule_id=args.schedule).run()
    except SubmitError as exc:
        return _refuse(console, exc)


def _refuse(console: Console, error: SubmitError) -> int:
    # soft_wrap: long lines stay whole (paths and commands in them can be copied; logs can be searched)
    console.print(f"[red]error:[/red] {escape(error.message)}", highlight=False, soft_wrap=True)
    for problem in error.problems:
        console.print(f"  - {problem}", markup=False, highlight=False, soft_wrap=True)
    return EXIT_INVALID


# ---- what to send: decided from the spec before anything is sent ---------------------------------------------
@dataclass
class Plan:
    spec: EvalSpec
    api_keys: dict[str, str] = field(default_factory=dict)  # model name -> key read from the environment
    notes: list[str] = field(default_factory=list)


def plan_submission(spec: EvalSpec, environ: dict[str, str]) -> Plan:
    """Check what the server cannot check for us (keys in this environment, files on this machine) so that a
    spec that cannot run registers and uploads nothing."""
    plan, problems = Plan(spec), []
    for index, model in enumerate(spec.models):
        if isinstance(model, EndpointModelSpec):
            if model.api_key_env and not model.resolved_api_key(environ):
                problems.append(f"models.{index}.api_key_env: the environment variable {model.api_key_env} is not "
                                "set (the key is read from this command's environment and sent to the server, "
                                "which stores it encrypted)")
                continue
            key = model.resolved_api_key(environ)
            if key:
                plan.api_keys[model.name] = key
    for index, dataset in enumerate(spec.datasets):
        if isinstance(dataset, CustomDatasetSpec) and not Path(dataset.path).is_file():
            problems.append(f"datasets.{index}.path: no such file: {dataset.path}")
    if problems:
        raise SubmitError("the spec cannot be submitted", problems)
    return plan


def model_settings(kind: str, name: str, values: dict[str, Any]) -> dict[str, Any]:
    """A model's settings as the engine reads them, defaults filled in: what two registrations are compared on."""
    spec = parse_spec({"models": [{"name": name, "kind": kind, **values}],
                       "datasets": [{"kind": "builtin", "config": "x"}]})
    return spec.models[0].model_dump(mode="json", exclude=NOT_SETTINGS)


# ---- authentication ------------------------------------------------------------------------------------------
def server_root(url: str) -> str:
    """The server's address without a trailing slash or the API prefix (both are accepted on the command line)."""
    url = url.strip().rstrip("/")
    url = url.removesuffix("/api/v1").rstrip("/")
    try:
        parsed = httpx.URL(url)
    except Exception as exc:  # httpx raises several types for malformed URLs
        raise SubmitError(f"--server: {url!r} is not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise SubmitError(f"--server: {url!r} must be an http:// or https:// address, e.g. http://127.0.0.1:8000")
    return url


def find_token(server: str, environ: dict[str, str]) -> str | None:
    """The token for `server`: AIEVAL_TOKEN, else the config file's [servers."<url>"] token, else none.

    The file holds secrets, so it must be private to its owner (as ssh requires of its keys); a token in it is
    only ever sent to the server it is listed under."""
    token = environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    explicit = environ.get(CONFIG_ENV)
    path = Path(explicit).expanduser() if explicit else DEFAULT_CONFIG.expanduser()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if explicit:
            raise SubmitError(f"{CONFIG_ENV} names {path}, which does not exist") from None
        return None
    except OSError as exc:
        raise SubmitError(f"cannot read the config file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SubmitError(f"the config file {path} holds tokens but other users can access it (mode "
                          f"{stat.S_IMODE(mode):o}); make it private with: chmod 600 {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SubmitError(f"cannot read the config file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SubmitError(f"the config file {path} is not valid TOML: {exc}") from None
    servers = data.get("servers")
    if not isinstance(servers, dict):
        return None
    entries = {server_root(key): value for key, value in servers.items() if isinstance(value, dict) and _is_url(key)}
    entry = entries.get(server, {})
    token = entry.get("token")
    if token is not None and not isinstance(token, str):
        raise SubmitError(f"the config file {path}: servers.\"{server}\".token must be a string")
    return (token.strip() or None) if token else None


def _is_url(value: str) -> bool:
    try:
        server_root(value)
    except SubmitError:
        return False
    return True


# ---- talking to the server -----------------------------------------------------------------------------------
class ServerClient:
    """The server's REST API, with its refusals turned into SubmitError (the server's detail and problems)."""

    def __init__(self, server: str, token: str | None):
        self.server = server
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Redirects are not followed: the token is for this address only.
        self.http = httpx.Client(base_url=server + "/api/v1", headers=headers, timeout=120, follow_redirects=False)

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.http.close()

    def call(self, method: str, path: str, what: str, **kwargs) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServerUnreachable(f"cannot reach the server at {self.server} ({what}): {type(exc).__name__}: "
                                    f"{exc}") from None
        if response.status_code == 401:
            raise SubmitError(SIGN_IN_MESSAGE)
        if response.status_code == 403:
            detail, problems = _error_body(response)
            raise SubmitError(f"the server does not allow {what}: {detail}", problems)
        if response.is_redirect:
            raise SubmitError(f"the server at {self.server} answered {what} with a redirect to "
                              f"{response.headers.get('location', '?')}; give that address as --server")
        if response.status_code >= 400:
            detail, problems = _error_body(response)
            raise SubmitError(f"the server refused {what} (HTTP {response.status_code}): {detail}", problems)
        return response


class ServerUnreachable(SubmitError):
    pass


def _error_body(response: httpx.Response) -> tuple[str, list[str]]:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase, []
    if not isinstance(body, dict):
        return str(body)[:500], []
    problems = body.get("problems")
    return str(body.get("detail") or response.reason_phrase), [str(p) for p in problems] if isinstance(problems, list) else []


# ---- the submission --------------------------------------------------------------------------------------------
class Submission:
    def __init__(self, client: ServerClient, plan: Plan, console: Console, *, as_json: bool,
                 fail_under: float | None, wait: bool, poll_interval: float, schedule_id: int | None = None):
        self.client, self.plan, self.console = client, plan, console
        self.as_json, self.fail_under, self.wait, self.poll_interval = as_json, fail_under, wait, poll_interval
        self.schedule_id = schedule_id

    def say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def run(self) -> int:
        spec = self.plan.spec
        for note in self.plan.notes:
            self.say(f"note: {note}")
        model_ids = [self.ensure_model(model) for model in spec.models]
        dataset_ids = [self.upload_dataset(d) for d in spec.datasets if isinstance(d, CustomDatasetSpec)]
        builtin = [d.config for d in spec.datasets if isinstance(d, BuiltinDatasetSpec)]
        body = {"name": spec.name, "model_ids": model_ids, "dataset_ids": dataset_ids, "builtin_datasets": builtin,
                "params": spec.params.model_dump(mode="json", exclude_none=True)}
        if self.schedule_id is not None:
            body["schedule_id"] = self.schedule_id
        evaluation = self.client.call("POST", "/evaluations", "the evaluation", json=body).json()
        url = f"{self.client.server}/evaluations/{evaluation['id']}"
        self.say(f"evaluation {evaluation['id']} queued: {url}")
        if not self.wait:
            if self.as_json:
                print(json.dumps({"evaluation_id": evaluation["id"], "url": url, "status": evaluation["status"]}))
            return EXIT_OK
        try:
            final = self.wait_for_gate(self.follow(evaluation))
        except KeyboardInterrupt:
            self.say(f"stopped following; the evaluation keeps running on the server: {url}")
            return EXIT_INTERRUPTED
        return self.report(final, url)

    # ---- models ----
    def ensure_model(self, model) -> int:
        """The id of the server's model with this name and these settings, registered when there is none."""
        wanted = model.model_dump(mode="json", exclude=NOT_SETTINGS)
        key = self.plan.api_keys.get(model.name)
        for attempt in range(2):
            found = self.find_model(model.name)
            if found is not None:
                self.check_same_model(model.name, wanted, found)
                if key:  # the key in this environment is the current one (keys are rotated; the server keeps one)
                    self.client.call("PATCH", f"/models/{found['id']}", f"the API key of model {model.name!r}",
                                     json={"api_key": key})
                self.say(f"model {model.name!r}: using the registered model {found['id']}")
                return found["id"]
            try:
                created = self.client.call("POST", "/models", f"registering model {model.name!r}",
                                           json=self.model_body(model, key)).json()
            except SubmitError as exc:
                if attempt == 0 and "HTTP 409" in exc.message:  # registered at the same moment by another job
                    continue
                raise
            self.say(f"model {model.name!r}: registered as model {created['id']}")
            return created["id"]
        raise SubmitError(f"model {model.name!r} could not be registered")  # pragma: no cover

    def find_model(self, name: str) -> dict | None:
        # Names are unique on the server regardless of case; `q` matches substrings.
        candidates = self.client.call("GET", "/models", "the list of models", params={"q": name}).json()
        return next((m for m in candidates if m["name"].casefold() == name.casefold()), None)

    def check_same_model(self, name: str, wanted: dict[str, Any], found: dict) -> None:
        stored = {k: v for k, v in (found.get("settings") or {}).items() if k not in NOT_SETTINGS}
        try:
            registered = model_settings(found["kind"], found["name"], stored)
        except SpecError:
            registered = {"kind": found["kind"], **stored}
        differences = [f"{key}: spec {wanted.get(key)!r}, server {registered.get(key)!r}"
                       for key in sorted(set(wanted) | set(registered)) if wanted.get(key) != registered.get(key)]
        if differences:
            raise SubmitError(f"a model named {found['name']!r} (id {found['id']}) is registered on the server with "
                              "other settings; rename the model in the spec, or change the registered one",
                              differences)

    @staticmethod
    def model_body(model, key: str | None) -> dict[str, Any]:
        options = model.model_dump(mode="json", exclude=NOT_SETTINGS | {"kind"}, exclude_defaults=True)
        body: dict[str, Any] = {"name": model.name, "kind": model.kind}
        for top_level in ("base_url", "model", "path", "mode"):  # ModelCreate's own fields; the rest are options
            if top_level in options:
                body[top_level] = options.pop(top_level)
        body["options"] = options
        if key:
            body["api_key"] = key
        return body

    # ---- datasets ----
    def upload_dataset(self, dataset: CustomDatasetSpec) -> int:
        path = Path(dataset.path)
        form = {"name": dataset.name, "scorer": dataset.scorer, "infer_method": dataset.infer_method}
        if dataset.data_type:
            form["data_type"] = dataset.data_type
        try:
            with open(path, "rb") as handle:
                response = self.client.call("POST", "/datasets", f"the dataset file {path.name}",
                                            files={"file": (path.name, handle)}, data=form)
        except OSError as exc:
            raise SubmitError(f"cannot read {path}: {exc.strerror}") from None
        result = response.json()
        stored = result["dataset"]
        if not result.get("existing"):
            self.say(f"dataset {dataset.name!r}: uploaded as dataset {stored['id']}")
            return stored["id"]
        # The server keeps one dataset per file content: the earlier upload's way of scoring is the one used.
        differences = [f"{key}: spec {wanted!r}, server {stored.get(key)!r}"
                       for key, wanted in (("scorer", dataset.scorer), ("infer_method", dataset.infer_method),
                                           ("data_type", dataset.data_type))
                       if wanted is not None and stored.get(key) != wanted]
        if differences:
            raise SubmitError(f"the file {path.name} is already on the server as dataset {stored['name']!r} (id "
                              f"{stored['id']}), scored differently; change the spec or the dataset", differences)
        self.say(f"dataset {dataset.name!r}: the same file is already on the server as dataset {stored['id']} "
                 f"({stored['name']!r})")
        return stored["id"]

    # ---- following ----
    def follow(self, evaluation: dict) -> dict:
        """Poll the evaluation until it is final, drawing the engine's progress bar."""
        unreachable_since: float | None = None
        with Progress(*progress_columns(), console=self.console, transient=False) as progress:
            bar = progress.add_task(f"{evaluation['status']}", total=None, eta="")
            while True:
                self._draw(progress, bar, evaluation)
                if evaluation.get("terminal"):
                    return evaluation
                time.sleep(self.poll_interval)
                try:
                    evaluation = self.client.call("GET", f"/evaluations/{evaluation['id']}",
                                                  "the evaluation's state").json()
                    unreachable_since = None
                except ServerUnreachable:
                    unreachable_since = unreachable_since or time.monotonic()
                    if time.monotonic() - unreachable_since > UNREACHABLE_GRACE_S:
                        raise

    def wait_for_gate(self, evaluation: dict) -> dict:
        """A succeeded run of a schedule: its detail once the gate's verdict is in (checked right after the success)."""
        deadline = time.monotonic() + GATE_WAIT_S
        while (evaluation["status"] == "succeeded" and evaluation.get("schedule_id") is not None
               and evaluation.get("gate") is None and time.monotonic() < deadline):
            time.sleep(self.poll_interval)
            evaluation = self.client.call("GET", f"/evaluations/{evaluation['id']}", "the evaluation's gate").json()
        return evaluation

    @staticmethod
    def _draw(progress: Progress, bar, evaluation: dict) -> None:
        data = evaluation.get("progress") or {}
        description = evaluation.get("stage") or evaluation["status"]
        if data.get("pairs_total"):
            description = f"{description}: {data.get('pairs_done', 0)}/{data['pairs_total']} tasks"
        eta = f"ETA {data['eta_s']:.0f}s" if data.get("eta_s") is not None and not evaluation.get("terminal") else ""
        total = data.get("samples_total") or None
        progress.update(bar, description=description, completed=data.get("samples_done", 0), total=total, eta=eta)

    def report(self, evaluation: dict, url: str) -> int:
        scores = self.client.call("GET", f"/evaluations/{evaluation['id']}/results", "the results").json()
        below = ([s for s in scores if s["value"] < self.fail_under]
                 if self.fail_under is not None and evaluation["status"] == "succeeded" else [])
        if self.as_json:
            print(json.dumps({"evaluation_id": evaluation["id"], "url": url, "status": evaluation["status"],
                              "error": evaluation.get("error"), "scores": scores, "fail_under": self.fail_under,
                              "below_fail_under": below, "gate": evaluation.get("gate")}, indent=2,
                             ensure_ascii=False))
        else:
            self.console.print(score_table(f"Results ({evaluation['status']})",
                                           [(s["model"], s["dataset"], s["metric"], s["value"]) for s in scores]))
            self.say(f"Details: {url}")
        if evaluation["status"] != "succeeded":
            self.console.print(f"[red]the evaluation {evaluation['status']}:[/red] "
                               f"{escape(evaluation.get('error') or 'no error recorded')}", highlight=False,
                               soft_wrap=True)
            if evaluation.get("log_excerpt"):
                self.say(evaluation["log_excerpt"])
            return EXIT_FAILED
        if below:
            self.console.print(f"[red]{len(below)} score(s) below --fail-under {self.fail_under:g}:[/red]",
                               highlight=False, soft_wrap=True)
            for s in below:
                self.say(f"  {s['model']} / {s['dataset']} / {s['metric']}: {s['value']:.2f}")
            return EXIT_BELOW_THRESHOLD
        return self.report_gate(evaluation)

    def report_gate(self, evaluation: dict) -> int:
        """Exit 4 when the run's gate failed, with every rule's reasons; 0 otherwise (passed, not applicable)."""
        if evaluation.get("schedule_id") is None:
            return EXIT_OK
        gate = evaluation.get("gate")
        if gate is None:
            self.console.print(f"[red]the gate of schedule {evaluation['schedule_id']} gave no verdict within "
                               f"{GATE_WAIT_S:.0f} s[/red] (see the worker's log)", highlight=False, soft_wrap=True)
            return EXIT_GATE_FAILED
        colour = {"passed": "green", "failed": "red"}.get(gate["status"], "yellow")
        self.console.print(f"[{colour}]gate {gate['status']}[/{colour}] (schedule {gate.get('schedule_id')}, baseline "
                           f"{gate.get('baseline_evaluation_id') or 'none'})", highlight=False, soft_wrap=True)
        for rule in gate.get("rules", []):
            self.say(f"  {rule['rule'].get('kind')}: {rule['status']}")
            for reason in rule.get("reasons", []):
                self.say(f"    - {reason}")
        return EXIT_GATE_FAILED if gate["status"] == "failed" else EXIT_OK
