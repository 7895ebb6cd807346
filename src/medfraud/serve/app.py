"""The REST scoring service (FastAPI): ``/health``, ``/version`` and ``/score``.

Requests are checked in three layers, each answering 4xx with a message naming the field:

1. body size (:class:`BodySizeLimit`, an ASGI middleware counting bytes *before* parsing:
   ``Content-Length`` above the limit, or a streamed body growing past it, gets 413);
2. the pydantic request models (``extra="forbid"``: malformed JSON, missing, unknown or
   mistyped fields, negative money, too many claims -> 422 with ``claims[i].field``);
3. the model's own input check (:func:`medfraud.export.inputs.check_rows`: ids absent from
   the model's snapshot, amounts that do not add up, duplicate lines -> 422).

Scoring runs in one worker thread fed by :class:`MicroBatcher`: requests that arrive while
a batch is being scored are scored together in the next batch, one pipeline call for all
of them (the per-call cost of building features and evaluating rules is mostly fixed).  A
batch waits a few milliseconds for as many requests as the previous one held, so clients
that send a request as soon as their last is answered are answered together instead of in
two alternating groups.

A request's scores do not depend on other traffic.  Claim features and claim rules relate a
claim to other claims of its patient, to the number of facilities its doctor bills at that
day (among all claims, or among the settings a rule judges) and, for DRG-grouped stays, to
the stays of its diagnosis.  Requests that share a patient, or a doctor on the same service
date at other (facility, setting) pairs, go to separate lanes of a batch, which the
pipeline scores in one call as if each lane were alone
(:meth:`~medfraud.export.pipeline.ScoringPipeline.lane_tables`); requests that share a
claim id or a DRG diagnosis wait for the next batch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

import polars as pl
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from medfraud.export.inputs import CLAIM_COLUMNS, INPUT_COLUMNS, LINE_COLUMNS
from medfraud.rules.inputs import COPY_SEPARATOR
from medfraud.schema import ITEM_TYPES, SETTINGS

log = logging.getLogger("medfraud.serve")

MAX_BODY_BYTES = 1_000_000
MAX_CLAIMS = 100
# MicroBatcher._gather: how often it looks at the queue, and the pause in arrivals after
# which it stops waiting for the requests it expects (16 closed-loop clients on 2 cores:
# with 3 ms, 2.6 % of requests came just after their group's batch had started).
GATHER_POLL_SECONDS = 0.0005
GATHER_GAP_SECONDS = 0.006
# Most lanes of one batch (see MicroBatcher); each lane past the first adds ~3 ms to a
# 16-claim batch's ~27 ms.
MAX_LANES = 4
# What the worker processes of a multi-process server read (see app_from_environment).
ENV_MODEL = "MEDFRAUD_SERVE_MODEL"
ENV_MAX_BODY_BYTES = "MEDFRAUD_SERVE_MAX_BODY_BYTES"


# --------------------------------------------------------------------------- request models

class LineIn(BaseModel):
    """One claim line (contract ``claim_lines`` without claim_id); money in yuan."""

    model_config = ConfigDict(extra="forbid")

    line_no: int = Field(ge=0)
    item_type: Literal[ITEM_TYPES]  # type: ignore[valid-type]
    item_code: str = Field(min_length=1)
    quantity: float = Field(ge=0)
    days_supply: int | None = Field(default=None, ge=0)
    unit_price: float = Field(ge=0)
    amount: float = Field(ge=0)


class ClaimIn(BaseModel):
    """One claim (contract ``claims`` columns) with its lines."""

    model_config = ConfigDict(extra="forbid")

    claim_id: str = Field(min_length=1)
    patient_id: str = Field(min_length=1)
    doctor_id: str = Field(min_length=1)
    facility_id: str = Field(min_length=1)
    pharmacy_id: str | None = None
    setting: Literal[SETTINGS]  # type: ignore[valid-type]
    service_date: date
    admit_date: date | None = None
    discharge_date: date | None = None
    diagnosis_code: str = Field(min_length=1)
    drg_group: str | None = None
    drg_weight: float | None = Field(default=None, ge=0)
    total_amount: float = Field(ge=0)
    fund_paid: float = Field(ge=0)
    self_paid: float = Field(ge=0)
    region: str = Field(min_length=1)
    cross_region: bool
    settled_at: datetime
    lines: list[LineIn] = Field(min_length=1)


class ScoreRequest(BaseModel):
    """``/score`` body: 1 to 100 claims."""

    model_config = ConfigDict(extra="forbid")

    claims: list[ClaimIn] = Field(min_length=1, max_length=MAX_CLAIMS)


class ClaimScore(BaseModel):
    claim_id: str
    risk: float
    band: Literal["low", "medium", "high"]
    reasons: list[str]


class ScoreResponse(BaseModel):
    model: str
    version: str | None
    scores: list[ClaimScore]


# --------------------------------------------------------------------------- body size

class BodySizeLimit:
    """ASGI middleware: 413 when the request body exceeds ``max_bytes``, before any parsing.

    ``Content-Length`` is checked first; a body sent without it (chunked) is counted as it
    streams in and cut off as soon as it passes the limit.
    """

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await _send_error(send, 400, "body", "Content-Length is not an integer")
            if declared > self.max_bytes:
                return await _send_error(send, 413, "body", f"request body of {declared} bytes "
                                         f"exceeds the limit of {self.max_bytes} bytes")
        if length is not None:
            return await self.app(scope, receive, send)
        # No Content-Length (chunked): read and count the body before the app parses it,
        # stopping as soon as it passes the limit, then replay it to the app.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                return await _send_error(send, 413, "body", f"request body exceeds the limit of "
                                         f"{self.max_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _send_error(send, status: int, field_name: str, message: str) -> None:
    body = json.dumps({"detail": message, "errors": [{"field": field_name, "message": message}]}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------- batching

_ROW_SCHEMA = {**INPUT_COLUMNS, "_job": pl.Int32, "_claim": pl.Int64, "_line": pl.Int64}


def request_rows(requests: list[list[ClaimIn]]) -> pl.DataFrame:
    """Input-format rows of the claims of several requests, one row per line, plus ``_job``
    (index of the request), ``_claim`` and ``_line`` (indices inside it).

    Built from plain lists in one frame per batch: building a nested frame per request
    and exploding it cost ~0.5 ms a request on the event loop.
    """
    columns: dict[str, list] = {c: [] for c in _ROW_SCHEMA}
    claim_columns = [(c, columns[c]) for c in CLAIM_COLUMNS]
    line_columns = [(c, columns[c]) for c in LINE_COLUMNS]
    jobs, claims_at, lines_at = columns["_job"], columns["_claim"], columns["_line"]
    for job, claims in enumerate(requests):
        for claim_at, claim in enumerate(claims):
            head = [(values, getattr(claim, c)) for c, values in claim_columns]
            for line_at, line in enumerate(claim.lines):
                for values, value in head:
                    values.append(value)
                for c, values in line_columns:
                    values.append(getattr(line, c))
                jobs.append(job)
                claims_at.append(claim_at)
                lines_at.append(line_at)
    return pl.DataFrame(columns, schema=_ROW_SCHEMA)


@dataclass
class _Job:
    claims: list[ClaimIn]
    patients: frozenset[str]
    # (doctor, date) -> the (facility, setting) pairs of the job's claims on that day
    doctor_days: dict[tuple[str, date], frozenset[tuple[str, str]]]
    claim_ids: frozenset[str]
    drg_diagnoses: frozenset[str]
    future: asyncio.Future = field(repr=False)
    lane: int = 0  # lane of its batch (set by MicroBatcher._take)

    def copyable(self) -> bool:
        """Whether its ids can take a lane suffix (none holds the separator already)."""
        ids = (*self.patients, *self.claim_ids, *(doctor for doctor, _ in self.doctor_days))
        return not any(COPY_SEPARATOR in i for i in ids)


class _Lane:
    """The patients and doctor-days (with their places) of one lane of a batch."""

    def __init__(self):
        self.patients: set[str] = set()
        self.doctor_days: dict[tuple[str, date], frozenset[tuple[str, str]]] = {}

    def overlaps(self, job: _Job) -> bool:
        return bool(job.patients & self.patients) or any(
            self.doctor_days.get(day, places) != places for day, places in job.doctor_days.items())

    def add(self, job: _Job) -> None:
        self.patients |= job.patients
        self.doctor_days.update(job.doctor_days)


def _doctor_days(claims: list[ClaimIn]) -> dict[tuple[str, date], frozenset[tuple[str, str]]]:
    """(doctor, date) -> (facility, setting) pairs of the claims on that day."""
    days: dict[tuple[str, date], set[tuple[str, str]]] = {}
    for c in claims:
        days.setdefault((c.doctor_id, c.service_date), set()).add((c.facility_id, c.setting))
    return {day: frozenset(places) for day, places in days.items()}


class RequestProblems(Exception):
    """The model's input check rejected a request: ``errors`` lists field and message."""

    def __init__(self, errors: list[dict[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors[:5]))


class MicroBatcher:
    """Score concurrent requests together, one pipeline call per batch, in one worker thread.

    Parameters
    ----------
    pipeline : the :class:`~medfraud.export.pipeline.ScoringPipeline`.
    max_claims : most claims per batch.
    gather_seconds : longest wait, after a batch's first request, for the others expected
        (as many requests as the previous batch held; the wait also ends after a pause of
        :data:`GATHER_GAP_SECONDS` in arrivals).  A pipeline call costs nearly the
        same for 1 or 16 claims: clients that send their next request as soon as the last
        is answered otherwise split into two groups, each waiting for the other's batch
        and then its own.  A lone client never waits (it expects only itself).
    max_lanes : most lanes per batch (default :data:`MAX_LANES` when the pipeline
        :attr:`~medfraud.export.pipeline.ScoringPipeline.isolates_lanes`, else 1).
    """

    def __init__(self, pipeline, max_claims: int = 512, gather_seconds: float = 0.01,
                 max_lanes: int | None = None):
        self.pipeline = pipeline
        self.max_claims = max_claims
        if max_lanes is None:
            max_lanes = MAX_LANES if pipeline is not None and pipeline.isolates_lanes else 1
        self.max_lanes = max_lanes
        self.gather_seconds = gather_seconds
        self._queue: asyncio.Queue[_Job] | None = None
        self._held: list[_Job] = []
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._expected = 1      # requests the next batch waits for (up to gather_seconds)
        self.batches = 0        # batches scored so far
        self.largest_batch = 0  # most requests scored in one batch

    async def start(self) -> None:
        """Start the worker on the running event loop (again after :meth:`stop`)."""
        self._queue = asyncio.Queue()
        self._held = []
        self._expected = 1
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medfraud-score")
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._queue = None

    async def score(self, claims: list[ClaimIn]) -> list[dict[str, Any]]:
        """Scores ({claim_id, risk, band, reasons}) of one request's claims, in no particular
        order; raises RequestProblems."""
        if self._queue is None or self._worker is None or self._worker.done():
            await self.start()
        job = _Job(claims,
                   frozenset(c.patient_id for c in claims),
                   _doctor_days(claims),
                   frozenset(c.claim_id for c in claims),
                   frozenset(c.diagnosis_code for c in claims if c.drg_weight is not None),
                   asyncio.get_running_loop().create_future())
        await self._queue.put(job)
        return await job.future

    def _take(self) -> list[_Job]:
        """Jobs for the next batch: held-over jobs first, then what is queued.

        A job sharing a patient or a doctor-day (at other places) with the batch goes to
        another lane of it, where it is scored as if alone (up to ``max_lanes``); one
        sharing a claim id or a DRG diagnosis with it is held over to the next batch.
        """
        candidates = self._held
        self._held = []
        while not self._queue.empty():
            candidates.append(self._queue.get_nowait())
        batch: list[_Job] = []
        lanes: list[_Lane] = []
        claim_ids: set[str] = set()
        diagnoses: set[str] = set()
        size = 0
        plain = False  # the batch holds a job whose ids cannot be copied: one lane only
        for job in candidates:
            lane = next((k for k, lane in enumerate(lanes) if not lane.overlaps(job)), None)
            copyable = job.copyable()
            if batch and (job.claim_ids & claim_ids or job.drg_diagnoses & diagnoses
                          or size + len(job.claim_ids) > self.max_claims
                          or lane is None and (len(lanes) >= self.max_lanes or plain
                                               or not copyable)
                          or not copyable and len(lanes) > 1):
                self._held.append(job)
                continue
            if lane is None:
                lanes.append(_Lane())
                lane = len(lanes) - 1
            job.lane = lane
            lanes[lane].add(job)
            batch.append(job)
            claim_ids |= job.claim_ids
            diagnoses |= job.drg_diagnoses
            size += len(job.claim_ids)
            plain = plain or not copyable
        return batch

    async def _gather(self, last_arrival: float | None) -> None:
        """Move queued jobs to the held list until ``_expected`` are held, ``gather_seconds``
        have passed or, once jobs arrive (``last_arrival``: the loop time of the latest, None
        if none yet), none has come for ``GATHER_GAP_SECONDS``.

        Jobs held over from the last batch do not start the gap: the clients just answered
        need a few milliseconds to send their next requests.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.gather_seconds
        while True:
            while not self._queue.empty():
                self._held.append(self._queue.get_nowait())
                last_arrival = loop.time()
            now = loop.time()
            if (len(self._held) >= self._expected or now >= deadline
                    or (last_arrival is not None and now - last_arrival >= GATHER_GAP_SECONDS)):
                return
            # Polling, not wait_for(queue.get()): a get cancelled by its timeout just as an
            # item arrives could lose that request.
            await asyncio.sleep(GATHER_POLL_SECONDS)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            last_arrival = None
            if not self._held:
                self._held.append(await self._queue.get())
                last_arrival = loop.time()
            await self._gather(last_arrival)
            batch = self._take()
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(batch))
            try:
                results = await loop.run_in_executor(self._executor, self._score_batch, batch)
            except Exception as exc:  # never let the worker die: fail this batch's requests
                log.exception("scoring batch failed")
                results = [exc] * len(batch)
            # The clients answered now are likely to send their next requests soon: the
            # next batch waits for them and for those already waiting, so that two groups
            # of clients alternating between batches merge into one.
            self._expected = len(batch) + len(self._held) + self._queue.qsize()
            for job, result in zip(batch, results):
                if job.future.done():
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    def _score_batch(self, batch: list[_Job]) -> list[Any]:
        """Check all rows at once, then score the requests without problems in one call;
        per job a list of score dicts or a RequestProblems."""
        rows = request_rows([job.claims for job in batch])
        checked = self.pipeline.check(rows.select(*INPUT_COLUMNS))
        results: list[Any] = [[] for _ in batch]
        bad_jobs: set[int] = set()
        if checked.problems.height:
            located = (checked.problems.join(
                rows.with_row_index("row", offset=1).select(pl.col("row").cast(pl.Int64), "_job",
                                                             "_claim", "_line"),
                on="row", how="left"))
            for i, group in located.group_by("_job"):
                job_index = int(i[0])
                bad_jobs.add(job_index)
                results[job_index] = RequestProblems(_field_errors(group))
        good = [i for i in range(len(batch)) if i not in bad_jobs]
        if good:
            claims, lines = checked.claims, checked.lines
            if bad_jobs:
                keep = pl.Series([c.claim_id for i in good for c in batch[i].claims]).implode()
                claims = claims.filter(pl.col("claim_id").is_in(keep))
                lines = lines.filter(pl.col("claim_id").is_in(keep))
            lanes = {c.claim_id: batch[i].lane for i in good for c in batch[i].claims}
            scores = self.pipeline.score(claims, lines, validate=False, lanes=lanes)
            owner = {c.claim_id: i for i in good for c in batch[i].claims}
            for score in scores.to_dicts():
                results[owner[score["claim_id"]]].append(score)
        return results


def _field_errors(problems: pl.DataFrame) -> list[dict[str, str]]:
    """Problems of one request as ``{"field": "claims[i].column", "message": ...}``."""
    out = []
    for p in problems.sort("_claim", "_line", "column", nulls_last=True).iter_rows(named=True):
        if p["_claim"] is None:
            where = p["column"]
        elif p["column"] in LINE_COLUMNS:
            where = f"claims[{p['_claim']}].lines[{p['_line']}].{p['column']}"
        else:
            where = f"claims[{p['_claim']}].{p['column']}"
        out.append({"field": where, "message": p["reason"]})
    # One message per field is enough for a client.
    seen, unique = set(), []
    for e in out:
        if (e["field"], e["message"]) not in seen:
            seen.add((e["field"], e["message"]))
            unique.append(e)
    return unique


# --------------------------------------------------------------------------- the app

def _validation_field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    text = ""
    for p in parts:
        text += f"[{p}]" if p.isdigit() else (f".{p}" if text else p)
    return text or "body"


def create_app(pipeline, info, *, max_body_bytes: int = MAX_BODY_BYTES,
               max_claims: int = MAX_CLAIMS) -> FastAPI:
    """The FastAPI application serving ``pipeline``.

    Parameters
    ----------
    pipeline : a loaded :class:`~medfraud.export.pipeline.ScoringPipeline`.
    info : its :class:`~medfraud.export.model_io.ModelInfo` (name, version, digest).
    max_body_bytes : request bodies above this get 413 (checked before parsing).
    max_claims : claims per request above this get 422 (at most :data:`MAX_CLAIMS`).
    """
    from contextlib import asynccontextmanager

    from medfraud.export.model_io import model_summary

    pipeline.warm()  # no request pays for lazily built state
    batcher = MicroBatcher(pipeline)
    summary = model_summary(info, pipeline)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="medfraud scoring", version=summary["medfraud"], lifespan=lifespan)
    app.state.batcher = batcher
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        errors = []
        for err in exc.errors():
            where = _validation_field(tuple(err.get("loc", ())))
            message = err.get("msg", "invalid")
            if err.get("type") == "json_invalid":
                position = next((p for p in err.get("loc", ())[1:] if isinstance(p, int)), None)
                at = f" at character {position}" if position is not None else ""
                where = "body"
                message = (f"body is not valid JSON{at} "
                           f"({err.get('ctx', {}).get('error', 'parse error')})")
            elif err.get("type") == "extra_forbidden":
                message = "unknown field"
            errors.append({"field": where, "message": message})
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return JSONResponse(status_code=422, content={"detail": detail, "errors": errors})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse(status_code=500, content={"detail": f"internal error: {type(exc).__name__}"})

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/version")
    async def version() -> dict[str, Any]:
        return summary

    @app.post("/score", response_model=ScoreResponse)
    async def score(body: ScoreRequest):
        if len(body.claims) > max_claims:
            message = f"{len(body.claims)} claims in one request; the limit is {max_claims}"
            return JSONResponse(status_code=422, content={
                "detail": f"claims: {message}", "errors": [{"field": "claims", "message": message}]})
        ids = [c.claim_id for c in body.claims]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            message = f"claim_id {dup!r} appears more than once in the request"
            return JSONResponse(status_code=422, content={
                "detail": f"claims: {message}", "errors": [{"field": "claims", "message": message}]})
        try:
            scores = await batcher.score(body.claims)
        except RequestProblems as exc:
            return JSONResponse(status_code=422, content={"detail": str(exc), "errors": exc.errors})
        by_id = {row["claim_id"]: row for row in scores}
        # Returned as a response, not through response_model: the scores are already the
        # documented shape, and re-validating them costs more than the encoding.
        return JSONResponse({"model": summary["model"], "version": summary["version"],
                             "scores": [by_id[i] for i in ids if i in by_id]})

    return app


def app_from_environment() -> FastAPI:
    """Application factory of one worker process of a multi-process server.

    ``uvicorn`` starts each worker in a fresh interpreter that imports this factory; the
    worker loads its own copy of the model named by ``MEDFRAUD_SERVE_MODEL`` (a folder or
    MLflow URI) and limits bodies to ``MEDFRAUD_SERVE_MAX_BODY_BYTES``.
    """
    from medfraud.export.model_io import load_pipeline

    model = os.environ.get(ENV_MODEL)
    if not model:
        raise RuntimeError(f"{ENV_MODEL} is not set: it names the model each worker loads")
    pipeline, info = load_pipeline(model)
    return create_app(pipeline, info,
                      max_body_bytes=int(os.environ.get(ENV_MAX_BODY_BYTES, MAX_BODY_BYTES)))
