"""`aieval serve`: the embedded default — API, UI files and a worker from one command. `aieval create-admin`:
an administrator account for sign-in (AIEVAL_AUTH_ENABLED).

Registered in the `aieval.commands` entry point group (see aieval_engine.cli)."""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("aieval_server.serve")


def add_serve_command(commands) -> None:
    serve = commands.add_parser("serve", help="start the web server and a worker (embedded default)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--data-dir", dest="serve_data_dir", default=None,
                       help="database, storage, jobs and the demo model live here (same as aieval --data-dir)")
    serve.add_argument("--no-worker", action="store_true", help="API only (workers run elsewhere)")
    serve.add_argument("--workers", type=int, default=1, help="evaluations run at the same time by the worker")
    serve.set_defaults(handler=_cmd_serve)


def _cmd_serve(args) -> int:
    # `aieval serve --data-dir D` and `aieval --data-dir D serve` both work; the engine's default otherwise.
    data_dir = args.serve_data_dir or args.data_dir
    os.environ["AIEVAL_DATA_DIR"] = str(Path(data_dir).resolve())
    return serve(args.host, args.port, worker=not args.no_worker, concurrency=args.workers)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: may resolve to anything


SIGN_IN_NEEDED = (
    "refusing to listen on {host}: other machines could use this server without signing in. Turn sign-in on "
    "with AIEVAL_AUTH_ENABLED=true (in .env or the environment), create an administrator with\n"
    "  aieval create-admin <username>\n"
    "(or set AIEVAL_INITIAL_ADMIN_USERNAME and AIEVAL_INITIAL_ADMIN_PASSWORD for the first start), then start "
    "again. Without sign-in, listen on 127.0.0.1 only."
)


def add_create_admin_command(commands) -> None:
    create = commands.add_parser(
        "create-admin", help="create an administrator account (for AIEVAL_AUTH_ENABLED), or with --reset give an "
                             "existing one a new password")
    create.add_argument("username")
    create.add_argument("--display-name", default=None)
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input instead of asking for it")
    create.add_argument("--reset", action="store_true",
                        help="for a locked-out team: a new password for this existing administrator, who is signed "
                             "out everywhere")
    create.add_argument("--promote", action="store_true",
                        help="with --reset: also make the user an administrator and enable the account if disabled")
    create.set_defaults(handler=_cmd_create_admin)


def _read_password(from_stdin: bool) -> str | None:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != password:
        print("the two passwords differ; nothing was changed", file=sys.stderr)
        return None
    return password


def _cmd_create_admin(args) -> int:
    """The password is asked for (twice) or read from stdin: never a command-line value, which other users of
    the machine could see in the process list and which shells keep in their history."""
    os.environ.setdefault("AIEVAL_DATA_DIR", str(Path(args.data_dir).resolve()))
    from .config import get_settings
    from .enums import UserRole
    from .services import accounts, bootstrap
    from .services.errors import Conflict, ServiceError

    if args.promote and not args.reset:
        print("aieval create-admin: --promote goes with --reset (a new account is an administrator anyway)",
              file=sys.stderr)
        return 2
    settings = get_settings()
    password = _read_password(args.password_stdin)
    if password is None:
        return 1
    try:
        accounts.check_username(args.username)
        accounts.check_password(password)
        bootstrap.prepare_database(settings)
        from .db import session_scope

        with session_scope(settings.database_url) as session:
            if args.reset:
                username = _reset_admin(session, args.username, password, promote=args.promote)
            else:
                user = accounts.create_user(session, args.username, password, UserRole.admin, args.display_name)
                username = user.username
    except Conflict as exc:
        hint = "" if args.reset else " (to give that administrator a new password: add --reset)"
        print(f"aieval create-admin: {exc.message}{hint}", file=sys.stderr)
        return 1
    except ServiceError as exc:
        print(f"aieval create-admin: {exc.message}", file=sys.stderr)
        return 1
    if args.reset:
        print(f"set a new password for the administrator {username!r} and signed them out everywhere")
        return 0
    print(f"created the administrator {username!r}" + ("" if settings.auth_enabled else
          "; sign-in is still off: set AIEVAL_AUTH_ENABLED=true to require it"))
    return 0


CLI_ACTOR = "aieval create-admin"  # the audit log's actor for changes made on the server's machine


def _reset_admin(session, username: str, password: str, *, promote: bool) -> str:
    """A new password for an active administrator (with `promote`: for any user, who becomes an active
    administrator); the user's sessions are revoked. Audited as an update by the command."""
    from sqlalchemy import select

    from .enums import AuditAction, AuditTarget, UserRole
    from .models import User
    from .services import accounts, audit
    from .services.errors import Invalid, NotFound

    user = session.scalar(select(User).where(User.username == accounts.normalize_username(username)))
    if user is None:
        raise NotFound(f"there is no user {accounts.normalize_username(username)!r}; leave out --reset to create "
                       "this administrator")
    if not promote and (user.role != UserRole.admin.value or user.disabled):
        state = "a disabled administrator" if user.role == UserRole.admin.value else f"a {user.role}"
        raise Invalid(f"{user.username!r} is {state}; add --promote to make them an active administrator")
    before = {"role": user.role, "disabled": user.disabled}
    accounts.update_user(session, user.id, password=password,
                         role=UserRole.admin if promote else None, disabled=False if promote else None)
    detail = audit.changed_fields(before, {"role": user.role, "disabled": user.disabled})
    audit.record_as(session, None, CLI_ACTOR, AuditAction.updated, AuditTarget.user, user.id, user.username,
                    {**detail, "password": "set"})
    return user.username


def _exit_status(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class WorkerSupervisor:
    """Keeps the embedded worker running. A worker that ends is reaped at once (no zombie) and started again
    after a pause that doubles with each quick failure (`first_delay_s` .. `max_delay_s`) and is back at
    `first_delay_s` once a worker has run for `healthy_after_s`; every restart is logged with its reason.

    The worker is started (and restarted) from the supervisor's own thread, which lives as long as `serve`:
    the worker's PR_SET_PDEATHSIG follows the thread that started it."""

    def __init__(self, argv: list[str], env: dict[str, str], *, first_delay_s: float = 1.0,
                 max_delay_s: float = 30.0, healthy_after_s: float = 60.0, stop_timeout_s: float = 30.0):
        self.argv, self.env = argv, env
        self.first_delay_s, self.max_delay_s = first_delay_s, max_delay_s
        self.healthy_after_s, self.stop_timeout_s = healthy_after_s, stop_timeout_s
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, daemon=True, name="aieval-worker-supervisor")

    def start(self) -> None:
        self._thread.start()

    def _supervise(self) -> None:
        delay = self.first_delay_s
        while True:
            with self._lock:  # stop() either sees this process or prevents it
                if self._stopping.is_set():
                    return
                self.process = subprocess.Popen(self.argv, env=self.env)
                process = self.process
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            lived = time.monotonic() - started
            if lived >= self.healthy_after_s:
                delay = self.first_delay_s
            log.warning("the worker (pid %d) %s after %.1f s; starting a new one in %.1f s", process.pid,
                        _exit_status(code), lived, delay)
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, self.max_delay_s)
            self.restarts += 1

    def stop(self) -> None:
        """SIGTERM the worker (Celery's warm shutdown), SIGKILL it if it is still there after `stop_timeout_s`."""
        with self._lock:
            self._stopping.set()
            process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._thread.join(timeout=5)


def _exit_on_sigterm(signum: int, _frame) -> None:
    """uvicorn answers SIGTERM with a graceful shutdown and then raises the signal again once it has restored
    the previous handler: this one, so `serve` leaves through its `finally` and stops its worker properly,
    instead of dying on the spot (the default action)."""
    raise SystemExit(128 + signum)


def banner(url: str) -> str:
    return f"ai-eval-system is running: open {url} — press New evaluation (Ctrl+C stops it)"


def _server_class():
    import uvicorn

    class AnnouncingServer(uvicorn.Server):
        """uvicorn's server that says where to go once it listens (not before: the port may be taken), in one
        line on the console instead of uvicorn's start-up lines."""

        def __init__(self, config: uvicorn.Config, *, json_lines: bool):
            super().__init__(config)
            self.json_lines = json_lines

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if not self.started or self.should_exit:
                return
            host = self.config.host
            url = f"http://{f'[{host}]' if ':' in host else host}:{self.config.port}"
            if self.json_lines:
                log.info("listening on %s", url)
            else:
                print(banner(url), flush=True)

    return AnnouncingServer


def serve(host: str, port: int, *, worker: bool = True, concurrency: int = 1) -> int:
    import uvicorn

    from .config import get_settings
    from .log_config import configure_logging, logging_config
    from .main import create_app
    from .services.accounts import has_admin
    from .services.bootstrap import prepare_database

    settings = get_settings()
    settings.check_production_ready()
    if not settings.auth_enabled and not is_loopback(host):
        print(SIGN_IN_NEEDED.format(host=host), file=sys.stderr)
        return 2
    configure_logging(settings, quiet=True)  # before the migrations: Alembic's lines follow the settings too
    prepare_database(settings)  # before the worker starts, so the two never race on migrations
    supervisor = None
    stop_sweeping = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if settings.auth_enabled and not has_admin(settings):
        log.warning("sign-in is on and there is no administrator yet: create one with `aieval create-admin "
                    "<username>` (or AIEVAL_INITIAL_ADMIN_USERNAME/_PASSWORD at the next start)")
    if worker:
        from .worker import start_schedule_ticker, start_sweeper

        # The worker stops the moment `serve` ends, however it ends (--parent-pid), and leaves requeueing the
        # jobs of a dead worker to `serve`: a sweeper inside the worker would die with it.
        supervisor = WorkerSupervisor(
            [sys.executable, "-m", "aieval_server.worker", "--concurrency", str(concurrency), "--no-sweeper",
             "--parent-pid", str(os.getpid()), "--quiet"],
            env={**os.environ, "AIEVAL_DATA_DIR": str(settings.data_dir)})
        supervisor.start()
        start_sweeper(stop_sweeping)
        # No Celery beat in the embedded default: this process looks at the schedules itself (services/schedules).
        start_schedule_ticker(stop_sweeping)
    # The logging as configured above (log_level=None: uvicorn leaves the levels alone); no `server: uvicorn` header.
    config = uvicorn.Config(create_app(settings), host=host, port=port, log_config=logging_config(settings, quiet=True),
                            log_level=None, server_header=False)
    try:
        _server_class()(config, json_lines=settings.log_format == "json").run()
    finally:
        stop_sweeping.set()
        if supervisor is not None:
            supervisor.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aieval-server")
    parser.add_argument("--data-dir", default=os.environ.get("AIEVAL_DATA_DIR") or str(Path.home() / ".cache" / "aieval"))
    add_serve_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
