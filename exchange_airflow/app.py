"""The Exchanges view's FastAPI app: each route authenticates the Airflow user, calls `data`
and renders a template. Nothing here changes an agreement: approval and suspension stay on the
officer's machine with their key, so pages only show the command to run."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.core_api.security import get_user
from airflow.configuration import conf
from fastapi import Depends, FastAPI, Form, HTTPException, Request, status
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from exchange import reporting
from exchange.errors import ExchangeError
from exchange.settings import Settings
from exchange_airflow import data

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
VIEW = "Exchanges"  # the custom view the auth manager is asked about
SUBJECT_VIEW = "Exchanges subject lookup"
# No script at all, nothing from another origin; framed only by Airflow's own UI.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; font-src 'self'; "
    "form-action 'self'; frame-ancestors 'self'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes a form's Origin "null"
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["zip"] = lambda first, *rest: list(zip(first, *rest, strict=True))
templates.env.filters["yesno"] = lambda values: ["Yes" if v else "No" for v in values]


def viewer(request: Request, user: Annotated[Any, Depends(get_user)]) -> Any:
    """The signed-in Airflow user (401 without a valid token), if the auth manager lets them
    see the Exchanges view (else 403)."""
    allowed = get_auth_manager().is_authorized_custom_view(
        method="GET", resource_name=VIEW, user=user
    )
    if not allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "not allowed to see the Exchanges view")
    return user


def auditor(request: Request, user: Annotated[Any, Depends(viewer)]) -> Any:
    """A user named in `[exchange_view] auditors` (and allowed the subject lookup view by the
    auth manager); 403 for anyone else."""
    named = {name.strip() for name in conf.getlist("exchange_view", "auditors", fallback=[])}
    allowed = get_auth_manager().is_authorized_custom_view(
        method="POST", resource_name=SUBJECT_VIEW, user=user
    )
    if user.get_id() not in named or not allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the subject lookup is for auditors only")
    return user


def _report(settings: Settings, start: dt.date, end: dt.date) -> reporting.Report:
    """`data.report`, reading every ledger entry at most every `[exchange_view]
    full_verify_seconds` (default 300; 0 reads them all on every page)."""
    every = data.full_verify_seconds(
        conf.get("exchange_view", "full_verify_seconds", fallback=None)
    )
    return data.report(settings, start, end, full_every=every)


Viewer = Annotated[Any, Depends(viewer)]
Auditor = Annotated[Any, Depends(auditor)]

app = FastAPI(title="Exchanges", docs_url=None, redoc_url=None, openapi_url=None)


@app.middleware("http")
async def security_headers(request: Request, call_next: Any) -> Response:
    response: Response = await call_next(request)
    response.headers.update(HEADERS)
    return response


@app.exception_handler(ExchangeError)
async def library_error(request: Request, exc: ExchangeError) -> Response:
    """The library's own one-line message (it names the cause and the next step)."""
    return HTMLResponse(
        templates.get_template("problem.html").render(message=str(exc)),
        status.HTTP_503_SERVICE_UNAVAILABLE,
    )


def _page(request: Request, name: str, user: Any, **context: Any) -> HTMLResponse:
    context.update(user=user.get_name(), today=dt.date.today())
    return templates.TemplateResponse(request, name, context)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ExchangeError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc


def _period(since: str | None, until: str | None) -> tuple[dt.date, dt.date]:
    """The report's period, as `exchange audit report` defaults it: the last 30 days."""
    try:
        end = dt.date.fromisoformat(until) if until else dt.date.today()
        start = dt.date.fromisoformat(since) if since else end - dt.timedelta(days=30)
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "dates are YYYY-MM-DD") from exc
    if start > end:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"since {start} is after until {end}")
    return start, end


def dag_id(contract_id: str) -> str:
    """The DAG dags/ makes for a (loadable, so safely named) contract."""
    return f"exchange__{contract_id}"


def _airflow_schedule(contract_ids: list[str]) -> dict[str, str]:
    """Per contract id, what Airflow's metadata database says of its DAG's next run."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    names = {dag_id(c): c for c in contract_ids}
    found = {c: "No DAG in Airflow yet" for c in contract_ids}
    with create_session() as session:
        for dag in session.scalars(select(DagModel).where(DagModel.dag_id.in_(names))):
            when = dag.next_dagrun_create_after
            nxt = f"next run {when:%Y-%m-%d %H:%M} UTC" if when else "no next run"
            found[names[dag.dag_id]] = f"Paused in Airflow ({nxt})" if dag.is_paused else nxt
    return found


@app.get("/", response_class=HTMLResponse, name="register")
def register_page(
    request: Request, user: Viewer, since: str | None = None, until: str | None = None
) -> HTMLResponse:
    settings = _settings()
    start, end = _period(since, until)
    built = _report(settings, start, end)
    rows = data.register(settings, dt.date.today(), built)
    runs = _airflow_schedule([row["id"] for row in rows if not row["invalid"]])
    for row in rows:
        row["next_run"] = runs.get(row.get("id", ""), "")
    return _page(request, "register.html", user, rows=rows, since=start, until=end)


@app.get("/agreements/{contract_id}", response_class=HTMLResponse, name="agreement")
def agreement_page(
    request: Request,
    contract_id: str,
    user: Viewer,
    since: str | None = None,
    until: str | None = None,
) -> HTMLResponse:
    settings = _settings()
    path = data.find_contract(settings, contract_id)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no agreement with this id")
    start, end = _period(since, until)
    built = _report(settings, start, end)
    shown = data.agreement(settings, path, dt.date.today(), built)
    return _page(request, "agreement.html", user, since=start, until=end, **shown)


@app.get("/ledger", response_class=HTMLResponse, name="ledger")
def ledger_page(
    request: Request, user: Viewer, since: str | None = None, until: str | None = None
) -> HTMLResponse:
    start, end = _period(since, until)
    built = _report(_settings(), start, end)
    days = [
        (day, partner, rows)
        for day, partners in sorted(built.rows_by_day.items())
        for partner, rows in sorted(partners.items())
    ]
    return _page(
        request,
        "ledger.html",
        user,
        report=built,
        days_rows=_with_refusals(built, days),
        bars=_bars(days),
        since=start,
        until=end,
    )


def _with_refusals(
    built: reporting.Report, days: list[tuple[str, str, int]]
) -> list[tuple[str, str, int, int]]:
    """The chart's table: rows sent and runs refused per day (the report's own day: the
    entry's recorded date) and partner, from the report's refusals; a day with refusals only
    has a row too (no bar: nothing was sent)."""
    refused = Counter((r["at"][:10], t.recipient) for t in built.agreements for r in t.refused)
    sent = {(day, partner): rows for day, partner, rows in days}
    return [
        (day, partner, sent.get((day, partner), 0), refused[(day, partner)])
        for day, partner in sorted(set(sent) | set(refused))
    ]


def _bars(days: list[tuple[str, str, int]], width: int = 600, height: int = 160) -> list[Any]:
    """Geometry of an SVG bar per day and partner (rows sent); the table beside it is the
    text alternative. Drawn on the server: the page runs no script."""
    if not days:
        return []
    top = max(rows for _, _, rows in days) or 1
    step = width / len(days)
    return [
        {
            "x": round(i * step + 2, 1),
            "w": round(max(step - 4, 1), 1),
            "h": round(rows / top * height, 1),
            "y": round(height - rows / top * height, 1),
            "label": f"{day}, {partner}: {rows} rows",
        }
        for i, (day, partner, rows) in enumerate(days)
    ]


@app.get("/subject", response_class=HTMLResponse, name="subject")
def subject_form(request: Request, user: Auditor) -> HTMLResponse:
    return _page(request, "subject.html", user, errors={}, answer=None, reason="")


def _same_origin(request: Request) -> None:
    """Refuse a form posted from another site (the session is a cookie)."""
    fetched = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.url.netloc}"
    if fetched not in (None, "same-origin") or (origin is not None and origin != own):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the form must be sent from this site")


@app.post("/subject", response_class=HTMLResponse, name="subject_lookup")
def subject_lookup(
    request: Request,
    user: Auditor,
    subject: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> HTMLResponse:
    _same_origin(request)
    errors = {}
    if not subject.strip():
        errors["subject"] = "Enter the person's id, as the source system holds it"
    if not reason.strip():
        errors["reason"] = "Enter why you are looking this person up, e.g. SAR-2026-017"
    if errors:
        return _page(
            request, "subject.html", user, errors=errors, answer=None, reason=reason.strip()
        )
    who = f"{user.get_name()} (Airflow user, Exchanges view)"
    try:
        answer = data.subject_lookup(_settings(), subject.strip(), reason.strip(), who)
    except ExchangeError as exc:
        errors["subject"] = f"The lookup was refused and recorded: {exc}"
        return _page(request, "subject.html", user, errors=errors, answer=None, reason="")
    return _page(request, "subject.html", user, errors={}, answer=answer, reason="")


@app.get("/static/{path:path}", name="static")
def static(path: str, user: Viewer) -> FileResponse:
    target = (STATIC / path).resolve()
    if not target.is_relative_to(STATIC) or not target.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
    return FileResponse(target)
