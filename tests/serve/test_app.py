"""The REST service: /health, /version, /score and every bad-request case (4xx, no crash)."""

from __future__ import annotations

import asyncio
import json

import httpx
import polars as pl
import pytest
from fastapi.testclient import TestClient

from medfraud.export.model_io import ModelInfo, load_pipeline
from medfraud.serve.app import create_app
from tests.export.factory import holdout_frames


@pytest.fixture(scope="module")
def app(exported):
    # A pipeline of its own: the app switches its detectors to explain every claim.
    pipeline, _ = load_pipeline(exported["model_dir"])
    info = ModelInfo(exported["name"], exported["version"], str(exported["model_dir"]),
                     exported["model_dir"], pipeline.data_digest)
    return create_app(pipeline, info)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def claims_json(exported):
    """Held-out claims as /score request items (lines nested), JSON-ready."""
    claims, lines = holdout_frames(exported["dataset"])
    nested = lines.group_by("claim_id", maintain_order=True).agg(
        pl.struct(pl.exclude("claim_id")).alias("lines"))
    frame = claims.join(nested, on="claim_id", how="inner", maintain_order="left")
    return json.loads(frame.head(120).write_json())


def _ok_health(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def _error_fields(response) -> list[str]:
    return [e["field"] for e in response.json()["errors"]]


def test_health_and_version(client, exported, pipeline):
    _ok_health(client)
    v = client.get("/version").json()
    assert v["model"] == exported["name"] and v["version"] == exported["version"]
    assert v["data_digest"] == pipeline.data_digest
    assert "lightgbm@claim" in v["detectors"]


def test_score_one_and_many(client, claims_json, pipeline, exported):
    one = client.post("/score", json={"claims": claims_json[:1]})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["model"] == exported["name"] and len(body["scores"]) == 1
    first = body["scores"][0]
    assert first["claim_id"] == claims_json[0]["claim_id"] and 0 <= first["risk"] <= 1
    assert first["band"] in ("low", "medium", "high") and isinstance(first["reasons"], list)
    many = client.post("/score", json={"claims": claims_json[:25]})
    assert [s["claim_id"] for s in many.json()["scores"]] == [c["claim_id"] for c in claims_json[:25]]
    # Same scores as the pipeline called directly.
    claims, lines = holdout_frames(exported["dataset"])
    direct = pipeline.score(claims.head(25), lines)
    assert [s["risk"] for s in many.json()["scores"]] == pytest.approx(direct["risk"].to_list(), abs=1e-9)


def _with(claim: dict, **changes) -> dict:
    out = json.loads(json.dumps(claim))
    out.update(changes)
    return out


@pytest.mark.parametrize("case", [
    "malformed_json", "missing_field", "mistyped_field", "unknown_field", "negative_money",
    "bad_setting", "no_lines", "empty_claims", "unknown_patient", "unknown_doctor",
    "unknown_facility", "unknown_drug", "amounts_do_not_add_up", "duplicate_claim_ids",
    "line_mistyped", "not_an_object",
])
def test_bad_requests_get_4xx_naming_the_field(client, claims_json, case):
    claim = claims_json[0]
    line0 = claim["lines"][0]
    drug_index = next(i for i, l in enumerate(claim["lines"]) if l["item_type"] == "drug")
    expected_field = {
        "missing_field": "claims[0].patient_id", "mistyped_field": "claims[0].total_amount",
        "unknown_field": "claims[0].favourite_colour", "negative_money": "claims[0].fund_paid",
        "bad_setting": "claims[0].setting", "no_lines": "claims[0].lines", "empty_claims": "claims",
        "unknown_patient": "claims[0].patient_id", "unknown_doctor": "claims[0].doctor_id",
        "unknown_facility": "claims[0].facility_id",
        "unknown_drug": f"claims[0].lines[{drug_index}].item_code",
        "amounts_do_not_add_up": "claims[0].fund_paid", "duplicate_claim_ids": "claims",
        "line_mistyped": "claims[0].lines[0].quantity", "malformed_json": "body",
        "not_an_object": "body",
    }[case]
    if case == "malformed_json":
        r = client.post("/score", content=b'{"claims": [', headers={"content-type": "application/json"})
    elif case == "not_an_object":
        r = client.post("/score", json=[1, 2, 3])
    else:
        if case == "missing_field":
            body_claim = {k: v for k, v in claim.items() if k != "patient_id"}
        elif case == "mistyped_field":
            body_claim = _with(claim, total_amount="a lot")
        elif case == "unknown_field":
            body_claim = _with(claim, favourite_colour="red")
        elif case == "negative_money":
            body_claim = _with(claim, fund_paid=-1.0)
        elif case == "bad_setting":
            body_claim = _with(claim, setting="spa")
        elif case == "no_lines":
            body_claim = _with(claim, lines=[])
        elif case == "unknown_patient":
            body_claim = _with(claim, patient_id="P_GHOST")
        elif case == "unknown_doctor":
            body_claim = _with(claim, doctor_id="D_GHOST")
        elif case == "unknown_facility":
            body_claim = _with(claim, facility_id="F_GHOST")
        elif case == "unknown_drug":
            lines = json.loads(json.dumps(claim["lines"]))
            lines[drug_index]["item_code"] = "X_GHOST"
            body_claim = _with(claim, lines=lines)
        elif case == "amounts_do_not_add_up":
            body_claim = _with(claim, fund_paid=claim["fund_paid"] + 100.0)
        elif case == "line_mistyped":
            body_claim = _with(claim, lines=[{**line0, "quantity": "many"}])
        else:
            body_claim = claim
        claims = [] if case == "empty_claims" else [body_claim]
        if case == "duplicate_claim_ids":
            claims = [claim, claim]
        r = client.post("/score", json={"claims": claims})
    assert r.status_code == 422, (case, r.status_code, r.text)
    assert expected_field in _error_fields(r), (case, r.json())
    assert expected_field in r.json()["detail"] or case in ("malformed_json",)
    _ok_health(client)


def test_too_many_claims(client, claims_json):
    r = client.post("/score", json={"claims": claims_json[:101]})
    assert r.status_code == 422 and "claims" in _error_fields(r)
    assert "at most 100" in r.text or "limit is 100" in r.text
    _ok_health(client)


def test_oversized_body_is_rejected_before_parsing(client, claims_json):
    big = json.dumps({"claims": claims_json[:1], "padding": "x" * 1_100_000}).encode()
    r = client.post("/score", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and _error_fields(r) == ["body"]
    # A body streamed without Content-Length is counted as it arrives.
    def chunks():
        for _ in range(12):
            yield b" " * 100_000
    r = client.post("/score", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    _ok_health(client)


def test_unknown_route_and_method(client):
    assert client.get("/score").status_code == 405
    assert client.get("/nope").status_code == 404
    _ok_health(client)


def _scores_alone(app, claims: list[dict]) -> dict[str, dict]:
    """claim_id -> the score of each claim posted on its own."""
    with TestClient(app) as c:
        return {claim["claim_id"]: c.post("/score", json={"claims": [claim]}).json()["scores"][0]
                for claim in claims}


def _post_together(app, claims: list[dict]) -> list[httpx.Response]:
    """Post each claim as its own request, all at once (the batcher's largest_batch reset
    first); the responses in the order of ``claims``."""
    async def burst():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as ac:
            async with app.router.lifespan_context(app):
                return await asyncio.gather(*[ac.post("/score", json={"claims": [c]})
                                              for c in claims])

    app.state.batcher.largest_batch = 0
    return asyncio.run(burst())


def _assert_scored_as_alone(responses: list[httpx.Response], alone: dict[str, dict]) -> None:
    for r in responses:
        assert r.status_code == 200, r.text
        s = r.json()["scores"][0]
        assert s["risk"] == pytest.approx(alone[s["claim_id"]]["risk"], abs=1e-12)
        assert s["reasons"] == alone[s["claim_id"]]["reasons"]


def _patient_pair(claims_json: list[dict]) -> tuple[dict, dict] | None:
    """Two claims (no DRG stay) of one patient, or None."""
    by_patient: dict[str, list[dict]] = {}
    for claim in claims_json:
        if claim["drg_weight"] is None:
            by_patient.setdefault(claim["patient_id"], []).append(claim)
    return next((tuple(g[:2]) for g in by_patient.values() if len(g) >= 2), None)


def test_concurrent_requests_are_batched_without_crosstalk(app, claims_json):
    """Requests scored together give the same scores as alone (no shared patient/doctor)."""
    alone = _scores_alone(app, claims_json[:8])
    responses = _post_together(app, claims_json[:8] * 3)
    assert app.state.batcher.largest_batch > 1  # requests really were scored together
    _assert_scored_as_alone(responses, alone)


def _assert_pair_batched_without_crosstalk(app, pair: tuple[dict, dict]) -> None:
    """Both claims of ``pair``, posted four times each at once, share a batch (repeats of
    one id never do) and score exactly as each does alone."""
    alone = _scores_alone(app, list(pair))
    responses = _post_together(app, list(pair) * 4)
    assert app.state.batcher.largest_batch == 2
    _assert_scored_as_alone(responses, alone)


def test_a_doctor_on_different_days_is_batched_without_crosstalk(app, claims_json):
    """Claims of one doctor on different dates (different patients) may share a batch: the
    doctor's same-day facilities are the only doctor-level coupling of features and rules."""
    by_doctor: dict[str, list[dict]] = {}
    for claim in claims_json:
        by_doctor.setdefault(claim["doctor_id"], []).append(claim)
    pair = None
    for claims in by_doctor.values():
        for a in claims:
            for b in claims:
                if (a["service_date"] != b["service_date"] and a["patient_id"] != b["patient_id"]
                        and a["drg_weight"] is None and b["drg_weight"] is None):
                    pair = (a, b)
                    break
            if pair:
                break
        if pair:
            break
    assert pair is not None, "the held-out claims hold no doctor seen on two dates"
    _assert_pair_batched_without_crosstalk(app, pair)


def test_multi_worker_server_scores_like_one_process(exported, claims_json, client):
    """``medfraud serve --workers 2``: each worker process loads the model itself and
    answers /score with the same scores as the in-process app."""
    import os

    from tests.serve.server import running_server

    with running_server(exported["model_dir"], workers=2,
                        env={**os.environ, "POLARS_MAX_THREADS": "1"}) as base:
        body = {"claims": claims_json[:3]}
        # Both workers answer in turn (the kernel spreads connections): ask a few times.
        answers = [httpx.post(f"{base}/score", json=body, timeout=60.0) for _ in range(4)]
        assert all(a.status_code == 200 for a in answers), answers[0].text
        expected = client.post("/score", json=body).json()["scores"]
        for answer in answers:
            got = answer.json()["scores"]
            assert [g["claim_id"] for g in got] == [e["claim_id"] for e in expected]
            assert [g["reasons"] for g in got] == [e["reasons"] for e in expected]
            assert max(abs(g["risk"] - e["risk"]) for g, e in zip(got, expected)) <= 1e-9
        assert httpx.post(f"{base}/score", content=b"{", timeout=10.0,
                          headers={"content-type": "application/json"}).status_code == 422


def test_batcher_gathers_the_requests_it_expects_and_a_lone_one_does_not_wait():
    """After a batch of n requests the next batch waits (up to gather_seconds) for n, so
    closed-loop clients stay one group; the wait ends early after a pause in arrivals (once
    any arrived), and a lone client, expecting only itself, never waits."""
    from datetime import date

    from medfraud.serve.app import GATHER_GAP_SECONDS, MicroBatcher, _Job

    async def scenario() -> list[tuple[int, float]]:
        batcher = MicroBatcher(pipeline=None, gather_seconds=0.5)
        batcher._queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def job(k: int) -> _Job:
            return _Job([], frozenset({f"P{k}"}),
                        {(f"D{k}", date(2024, 5, 1)): frozenset({("F1", "outpatient")})},
                        frozenset({f"C{k}"}), frozenset(), loop.create_future())

        async def arrive(k: int, delay: float) -> None:
            await asyncio.sleep(delay)
            await batcher._queue.put(job(k))

        async def batch(expected: int, delays: list[float], held_over: bool = False
                        ) -> tuple[int, float]:
            batcher._expected = expected
            arrivals = [asyncio.create_task(arrive(k, d)) for k, d in enumerate(delays)]
            batcher._held.append(await batcher._queue.get())
            start = loop.time()
            await batcher._gather(last_arrival=None if held_over else start)
            waited = loop.time() - start
            size = len(batcher._take())
            await asyncio.gather(*arrivals)
            while not batcher._queue.empty():  # late arrivals: not part of this scenario
                batcher._queue.get_nowait()
            batcher._held = []
            return size, waited

        gap = GATHER_GAP_SECONDS
        return [await batch(3, [0.0, gap / 4, gap / 2]),  # closed loop: all three together
                await batch(3, [0.0, 20 * gap]),  # a pause: stop waiting after the gap
                await batch(1, [0.0]),  # a lone client
                # A job held over from the last batch waits for the clients just answered,
                # which come back later than the gap.
                await batch(3, [0.0, 2 * gap, 2.2 * gap], held_over=True)]

    results = asyncio.run(scenario())
    (together, _), (alone, waited_pause), (lone, waited_lone), (rejoined, _) = results
    assert together == 3
    assert alone == 1 and waited_pause < 10 * GATHER_GAP_SECONDS
    assert lone == 1 and waited_lone < GATHER_GAP_SECONDS
    assert rejoined == 3


def test_jobs_of_one_doctor_day_share_a_lane_only_at_the_same_places():
    """A doctor's claims of one day couple through the number of facilities (in the settings
    a rule judges) the doctor bills at that day: requests at the same (facility, setting)
    pairs may share a lane, others go to another lane or, with one lane (a pipeline that
    cannot isolate lanes), wait for the next batch."""
    from datetime import date

    from medfraud.serve.app import MicroBatcher, _Job

    day = date(2024, 5, 1)

    def job(k: int, doctor: str, when: date, *places: tuple[str, str]) -> _Job:
        return _Job([], frozenset({f"P{k}"}), {(doctor, when): frozenset(places)},
                    frozenset({f"C{k}"}), frozenset(), None)

    batcher = MicroBatcher(pipeline=None, max_lanes=1)
    batcher._queue = asyncio.Queue()
    jobs = [job(0, "D1", day, ("F1", "outpatient")),
            job(1, "D1", day, ("F1", "outpatient")),  # same places: together
            job(2, "D1", day, ("F2", "outpatient")),  # another facility: held
            job(3, "D1", day, ("F1", "inpatient")),  # another setting: held
            job(4, "D1", day, ("F1", "outpatient"), ("F2", "outpatient")),  # more places: held
            job(5, "D1", date(2024, 5, 2), ("F2", "outpatient")),  # another day: together
            job(6, "D2", day, ("F2", "outpatient"))]  # another doctor: together
    batcher._held = list(jobs)
    taken = batcher._take()
    assert [j.claim_ids for j in taken] == [jobs[i].claim_ids for i in (0, 1, 5, 6)]
    assert [j.claim_ids for j in batcher._held] == [jobs[i].claim_ids for i in (2, 3, 4)]

    laned = MicroBatcher(pipeline=None, max_lanes=3)
    laned._queue = asyncio.Queue()
    laned._held = list(jobs)
    taken = laned._take()
    # Lanes 1 and 2 take the first two that conflict with lane 0; the third conflicts with
    # all three lanes and waits.
    assert {j.claim_ids: j.lane for j in taken} == {
        jobs[0].claim_ids: 0, jobs[1].claim_ids: 0, jobs[2].claim_ids: 1,
        jobs[3].claim_ids: 2, jobs[5].claim_ids: 0, jobs[6].claim_ids: 0}
    assert [j.claim_ids for j in laned._held] == [jobs[4].claim_ids]


def test_jobs_sharing_a_patient_go_to_lanes_and_a_claim_or_drg_diagnosis_waits():
    """A shared patient only needs another lane; a repeated claim id or a DRG diagnosis
    shared between lanes (whose stays are one reference population) waits, as does a job
    whose ids hold the lane separator."""
    from datetime import date

    from medfraud.rules.inputs import COPY_SEPARATOR
    from medfraud.serve.app import MicroBatcher, _Job

    def job(claim: str, patient: str, drg: str | None = None) -> _Job:
        return _Job([], frozenset({patient}),
                    {(f"D{claim}", date(2024, 5, 1)): frozenset({("F1", "outpatient")})},
                    frozenset({claim}), frozenset({drg} if drg else ()), None)

    batcher = MicroBatcher(pipeline=None, max_lanes=4)
    batcher._queue = asyncio.Queue()
    jobs = [job("C0", "P1", drg="I21"),
            job("C1", "P1"),  # same patient: lane 1
            job("C2", "P1"),  # again: lane 2
            job("C0", "P2"),  # repeated claim id: waits
            job("C3", "P3", drg="I21"),  # the DRG diagnosis of another claim: waits
            job("C4", "P5" + COPY_SEPARATOR),  # cannot be copied, and lanes exist: waits
            job("C6", "P4")]  # unrelated: lane 0
    batcher._held = list(jobs)
    taken = batcher._take()
    assert [(next(iter(j.claim_ids)), j.lane) for j in taken] == [
        ("C0", 0), ("C1", 1), ("C2", 2), ("C6", 0)]
    assert [next(iter(j.claim_ids)) for j in batcher._held] == ["C0", "C3", "C4"]

    # First in a batch, a job that cannot be copied keeps the batch to one lane.
    batcher._held = [job("C7", "P9" + COPY_SEPARATOR), job("C8", "P9" + COPY_SEPARATOR),
                     job("C9", "P4")]
    taken = batcher._take()
    assert [(next(iter(j.claim_ids)), j.lane) for j in taken] == [("C7", 0), ("C9", 0)]
    assert [next(iter(j.claim_ids)) for j in batcher._held] == ["C8"]


def test_claims_of_one_doctor_day_and_facility_are_batched_without_crosstalk(app, claims_json):
    """Two claims of one doctor, day, facility and setting (different patients) share a
    batch and score as they do alone."""
    groups: dict[tuple, list[dict]] = {}
    for claim in claims_json:
        if claim["drg_weight"] is None:
            key = (claim["doctor_id"], claim["service_date"], claim["facility_id"], claim["setting"])
            groups.setdefault(key, []).append(claim)
    pair = next((g[:2] for g in groups.values()
                 if len(g) >= 2 and g[0]["patient_id"] != g[1]["patient_id"]), None)
    assert pair is not None, "the held-out claims hold no doctor-day with two claims at one place"
    _assert_pair_batched_without_crosstalk(app, pair)


def test_claims_of_one_patient_share_a_batch_in_lanes_without_crosstalk(app, claims_json):
    """Two claims of one patient go to separate lanes of one batch and score as they do
    alone (their features and rules would otherwise see each other)."""
    pair = _patient_pair(claims_json)
    assert pair is not None, "the held-out claims hold no patient with two claims"
    assert app.state.batcher.max_lanes > 1
    _assert_pair_batched_without_crosstalk(app, pair)


def test_lanes_keep_exact_scores_when_a_request_of_the_batch_is_rejected(app, claims_json):
    """A batch holding two lanes of one patient and a request the input check rejects: the
    rejected one gets its 422, the others score as they do alone."""
    pair = _patient_pair(claims_json)
    assert pair is not None, "the held-out claims hold no patient with two claims"
    ghost = _with(next(c for c in claims_json if c["patient_id"] != pair[0]["patient_id"]),
                  patient_id="P_GHOST")
    alone = _scores_alone(app, list(pair))
    first, rejected, second = _post_together(app, [pair[0], ghost, pair[1]])
    assert app.state.batcher.largest_batch == 3  # one batch: two lanes and the rejected request
    assert rejected.status_code == 422 and "claims[0].patient_id" in _error_fields(rejected)
    _assert_scored_as_alone([first, second], alone)
