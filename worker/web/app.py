"""The console's ASGI application: read-only pages, two token-protected actions, the reports.

Pages are plain functions of the database, rendered by Jinja2 with autoescaping on, so a series
description or AE title sent by a modality is always text, never markup. Database calls are
blocking, so pages are synchronous endpoints (Starlette runs them in its thread pool) and the
actions hand their writes to the same pool.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from db.engine import Database
from db.queries import list_studies, model_usage, patient_identities, prediction_rows, truth_rows
from db.repository import Repository
from db.vocabulary import Severity
from worker.web.actions import Action, run_action
from worker.web.drift import accuracy_trends
from worker.web.model_cards import model_cards
from worker.web.reports import MEDIA_TYPES, list_reports, safe_report_path
from worker.web.security import REPORT_POLICY, SecurityHeaders, TokenCheck, check_token, presented_token
from worker.web.settings import WebSettings
from worker.web.views import failures, format_duration, study_page

HERE = Path(__file__).parent
MAX_FORM_BYTES = 4096
UID_CHARS = frozenset("0123456789.")


@dataclass(frozen=True)
class Console:
    """What the console reads and writes: the database, its settings, the models and reports folders."""

    database: Database
    settings: WebSettings
    models_dir: Path
    reports_dir: Path
    configured_models: Mapping[str, str] = field(default_factory=dict)


def _when(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def template_environment() -> Environment:
    """Jinja2 with autoescaping forced on for every template (they are all HTML)."""
    environment = Environment(loader=FileSystemLoader(HERE / "templates"),
                              autoescape=select_autoescape(default=True, default_for_string=True))
    environment.filters.update(when=_when, duration=format_duration, percent=_percent)
    return environment


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def read_form(request: Request) -> dict[str, str]:
    """A small url-encoded form (the actions send two fields); anything larger is ignored."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


class Pages:
    """The endpoints, bound to one :class:`Console`."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.templates = template_environment()
        self.repository = Repository(console.database)

    def render(self, name: str, status_code: int = 200, **context: object) -> HTMLResponse:
        settings = self.console.settings
        html = self.templates.get_template(name).render(
            actions_enabled=settings.actions_enabled, show_patient=settings.show_patient, **context)
        return HTMLResponse(html, status_code=status_code)

    def home(self, request: Request) -> Response:
        return RedirectResponse("/studies", status_code=303)

    def studies(self, request: Request) -> Response:
        rows = list_studies(self.console.database, limit=300)
        identities = patient_identities(self.console.database) if self.console.settings.show_patient else {}
        return self.render("studies.html", studies=rows, identities=identities, page="studies")

    def study(self, request: Request) -> Response:
        uid = str(request.path_params["uid"])
        page = study_page(self.console.database, uid) if uid and set(uid) <= UID_CHARS else None
        if page is None:
            return self.render("message.html", 404, title="Not found", message="No such study.", page="studies")
        return self.render("study.html", view=page, page="studies")

    def failures(self, request: Request) -> Response:
        return self.render("failures.html", events=failures(self.console.database), page="failures")

    def models(self, request: Request) -> Response:
        per = request.query_params.get("per", "")
        per_cases = int(per) if per.isdigit() and 5 <= int(per) <= 100_000 else None
        database = self.console.database
        truth = {(t.study_uid, t.lesion_id): t.label for t in truth_rows(database)}
        return self.render(
            "models.html", page="models", per_cases=per_cases, usage=model_usage(database),
            cards=model_cards(self.console.models_dir, self.console.configured_models),
            trends=accuracy_trends(prediction_rows(database), truth, per_cases=per_cases))

    def reports(self, request: Request) -> Response:
        return self.render("reports.html", reports=list_reports(self.console.reports_dir), page="reports")

    def report_file(self, request: Request) -> Response:
        path = safe_report_path(self.console.reports_dir, str(request.path_params["path"]))
        if path is None:
            return self.render("message.html", 404, title="Not found", message="No such report.", page="reports")
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix],
                            headers={"Content-Security-Policy": REPORT_POLICY})

    async def action(self, request: Request) -> Response:
        """POST /actions/{resend,complete}: the token first, then the change, audited either way."""
        action = Action.parse(str(request.path_params["action"]))
        if action is None:
            return self.render("message.html", 404, title="Not found", message="No such action.")
        form = await read_form(request)
        check = check_token(self.console.settings.token, presented_token(request.headers, form))
        client = client_address(request)
        if check is not TokenCheck.ACCEPTED:
            await run_in_threadpool(self.repository.audit, "web.denied", f"{action.value} refused: token {check.value}",
                                    severity=Severity.WARNING, detail={"client": client, "action": action.value})
            response = self.render("message.html", check.status_code, title="Not allowed",
                                   message=_denial(check))
            if check is TokenCheck.MISSING:
                response.headers["WWW-Authenticate"] = 'Bearer realm="triphase"'
            return response
        outcome = await run_in_threadpool(run_action, self.repository, action, form, client)
        return self.render("message.html", outcome.status_code, title=outcome.title, message=outcome.message,
                           back=outcome.back)


def _denial(check: TokenCheck) -> str:
    if check is TokenCheck.DISABLED:
        return "Actions are disabled: no [web] token is configured."
    if check is TokenCheck.MISSING:
        return "This action needs the token from the configuration ([web] token)."
    return "The token is not the configured one."


def create_app(console: Console) -> Starlette:
    """The console as an ASGI application (what uvicorn serves and the tests drive)."""
    pages = Pages(console)
    routes = [
        Route("/", pages.home),
        Route("/studies", pages.studies),
        Route("/studies/{uid}", pages.study),
        Route("/failures", pages.failures),
        Route("/models", pages.models),
        Route("/reports", pages.reports),
        Route("/reports/{path:path}", pages.report_file),
        Route("/actions/{action}", pages.action, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])
